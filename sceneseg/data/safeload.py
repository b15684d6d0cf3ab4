"""Load MovieScenes pickles without letting them run code.

A pickle names the functions that rebuild its objects, and loading calls them: a pickle
from the internet can run anything. ``SafeUnpickler`` admits only the globals these files
need (torch tensor/storage rebuilding, numpy arrays, OrderedDict) and refuses the rest with
an error naming the file and the global. Torch storages arrive as ``_load_from_bytes(b)``,
which in torch calls ``torch.load(..., weights_only=False)``: we substitute a version with
``weights_only=True``, so the nested payload is allow-listed too.

Movies are read one at a time from a folder of ``tt*.pkl`` or from a zip holding them at
any depth, so memory stays near one movie.
"""

from __future__ import annotations

import _codecs
import io
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch._utils

from sceneseg.data.movies import Movie
from sceneseg.data.validate import movie_from_dict

MOVIE_FILE = re.compile(r"tt[^/\\]*\.pkl")


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a global outside the allow-list (a ValueError: bad input, exit 1)."""


def _allowed_globals() -> dict[tuple[str, str], object]:
    """(module, name) -> the object a pickle may use. Built on call: nothing happens at import."""
    reconstruct = np._core.multiarray._reconstruct
    scalar = np._core.multiarray.scalar
    return {
        # What pickle.dumps(torch tensor) emits (torch 1.x and 2.x); _load_from_bytes is replaced
        # per unpickler by a weights-only version (_weights_only_storage_loader).
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("collections", "OrderedDict"): OrderedDict,
        # Protocol-2 pickles spell bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): _codecs.encode,
        # numpy arrays and scalars (numpy 1.x wrote numpy.core, numpy 2.x numpy._core).
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.multiarray", "scalar"): scalar,
        ("numpy._core.multiarray", "scalar"): scalar,
    }


def _weights_only_storage_loader(name: str):
    """torch's ``_load_from_bytes`` calls ``torch.load(weights_only=False)``; this loads weights only."""

    def load_storage(b: bytes) -> object:
        try:
            return torch.load(io.BytesIO(b), weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"GLOBAL (\S+)", str(e))
            what = f"global '{found[1]}'" if found else "content"
            raise UnsafePickleError(f"{name}: refused to load {what} inside a tensor storage "
                                    "(only plain weights are allowed)") from None

    return load_storage


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only allow-listed globals; ``name`` is used in errors."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        super().__init__(file)
        self.name = name
        self.allowed = _allowed_globals()
        # A closure over the name, not a bound method: self -> allowed -> self would be a reference
        # cycle keeping the memo (every tensor of the movie) alive until the cyclic GC runs.
        self.allowed[("torch.storage", "_load_from_bytes")] = _weights_only_storage_loader(name)

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.name}: refused to load global '{module}.{name}' (not a tensor, array or container; "
                "the file may be malicious or not a MovieScenes pickle)"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(f"{self.name}: refused persistent id {pid!r} (not a plain pickle)")


def safe_unpickle(f: BinaryIO, name: str) -> object:
    """Unpickle one object from ``f`` with the allow-list; corrupt or unsafe data -> error naming ``name``."""
    try:
        obj = SafeUnpickler(f, name).load()
        trailing = f.read(1)  # also makes a zip member check its CRC
    except UnsafePickleError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupted pickle can raise almost anything
        raise ValueError(f"{name}: truncated or corrupted pickle ({type(e).__name__}: {e})") from None
    if trailing:
        raise ValueError(f"{name}: corrupted pickle (unexpected data after the end of the pickle)")
    return obj


def read_movie_pickle(path_or_fileobj: Path | str | BinaryIO, name: str, require_labels: bool = True,
                      check_name: bool = True) -> Movie:
    """Safely load one ``tt*.pkl`` (a path or an open binary file), validate it, return a numpy Movie.
    ``check_name``: the file name must be the movie's imdb id (a data set); off for a user's own file."""
    if isinstance(path_or_fileobj, (str, Path)):
        try:
            with open(path_or_fileobj, "rb") as f:
                d = safe_unpickle(f, name)
        except OSError as e:
            raise ValueError(f"{name}: cannot read the file ({e.strerror})") from None
    else:
        d = safe_unpickle(path_or_fileobj, name)
    return movie_from_dict(d, name, require_labels=require_labels, check_name=check_name)


def _is_movie_member(member: str) -> bool:
    base = member.replace("\\", "/").rsplit("/", 1)[-1]
    # Skip macOS resource forks (__MACOSX/..., ._tt*.pkl) that ride along in zips made on a Mac.
    return bool(MOVIE_FILE.fullmatch(base)) and not member.startswith("__MACOSX/")


def _movie_streams(source: Path) -> Iterator[tuple[str, BinaryIO]]:
    """(name, open binary stream) for each movie pickle of a zip (any depth) or folder, by file name.

    ``name`` is ``archive.zip!inner/path.pkl`` or the file path, used in every error message.
    """
    source = Path(source)
    if source.is_dir():
        for p in sorted(p for p in source.iterdir() if MOVIE_FILE.fullmatch(p.name) and p.is_file()):
            with open(p, "rb") as f:
                yield str(p), f
        return
    if not source.is_file():
        raise ValueError(f"{source}: expected a zip archive or a folder of tt*.pkl, found nothing there")
    try:
        z = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{source}: not a readable zip archive (truncated or wrong file?): {e}") from None
    with z:
        members = [i.filename for i in z.infolist() if not i.is_dir() and _is_movie_member(i.filename)]
        members.sort(key=lambda m: (m.rsplit("/", 1)[-1], m))
        for m in members:
            name = f"{source}!{m}"
            try:
                f = z.open(m)
            except (zipfile.BadZipFile, OSError, NotImplementedError) as e:
                raise ValueError(f"{name}: cannot read this archive member (corrupted archive?): {e}") from None
            with f:
                yield name, f


def iter_movies(source: Path, require_labels: bool = True) -> Iterator[Movie]:
    """Yield the validated movies of a zip or folder of ``tt*.pkl``, one at a time; duplicate ids are an error."""
    seen: dict[str, str] = {}
    for name, f in _movie_streams(source):
        movie = read_movie_pickle(f, name, require_labels=require_labels)
        if movie.imdb_id in seen:
            raise ValueError(f"{name}: duplicate imdb id {movie.imdb_id}, also in {seen[movie.imdb_id]}")
        seen[movie.imdb_id] = name
        yield movie
        del movie  # do not hold the previous movie while reading the next
