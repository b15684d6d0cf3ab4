import gc
import io
import os
import pickle
import weakref
import zipfile

import numpy as np
import pytest
import torch

from sceneseg.data.movies import MODALITIES
from sceneseg.data.safeload import UnsafePickleError, iter_movies, read_movie_pickle, safe_unpickle
from sceneseg.data.synthetic import generate_movie


def _movie(imdb_id: str = "tt0000001", n: int = 4) -> dict:
    return generate_movie(np.random.default_rng(int(imdb_id[2:])), imdb_id, n)


def _pickle(obj: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


class _RunsCode:
    """Unpickling this calls os.system: the attack an allow-list must stop."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_real_format_round_trips_bit_identical(tmp_path):
    d = _movie()
    path = tmp_path / "tt0000001.pkl"
    path.write_bytes(_pickle(d))
    m = read_movie_pickle(path, str(path))
    for k in MODALITIES:
        assert m.features[k].tobytes() == d[k].numpy().tobytes()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_every_pickle_protocol_loads(protocol):
    d = _movie()
    m = read_movie_pickle(io.BytesIO(_pickle(d, protocol)), "tt0000001.pkl")  # protocol 2 uses _codecs.encode
    assert np.array_equal(m.features["place"], d["place"].numpy())


def test_numpy_arrays_load():
    d = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in _movie().items()}
    m = read_movie_pickle(io.BytesIO(_pickle(d)), "tt0000001.pkl")
    assert np.array_equal(m.boundary, d["scene_transition_boundary_ground_truth"])


class _EvilStorage(_RunsCode):
    """A tensor storage whose nested torch payload runs code (torch's own loader would run it)."""

    def __reduce__(self):
        buf = io.BytesIO()
        torch.save(_RunsCode(self.marker), buf, _use_new_zipfile_serialization=False)
        return torch.storage._load_from_bytes, (buf.getvalue(),)


@pytest.mark.parametrize("payload,where", [(_RunsCode, ""), (_EvilStorage, " inside a tensor storage")])
def test_code_in_a_pickle_never_runs(tmp_path, payload, where):
    marker = tmp_path / "pwned"
    data = _pickle({"imdb_id": "tt0000001", "place": payload(str(marker))})
    refused = f"{os.system.__module__}.system"  # posix.system on Linux
    with pytest.raises(UnsafePickleError, match=rf"^evil/tt0000001.pkl: refused to load global '{refused}'{where}"):
        read_movie_pickle(io.BytesIO(data), "evil/tt0000001.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("obj,refused", [(eval, "builtins.eval"), (getattr, "builtins.getattr"), (zipfile.ZipFile, "zipfile.ZipFile")])
def test_other_globals_are_refused_by_name(obj, refused):
    with pytest.raises(UnsafePickleError, match=rf"x.pkl: refused to load global '{refused}'"):
        safe_unpickle(io.BytesIO(_pickle(obj)), "x.pkl")


def test_truncated_pickle_is_a_clear_error():
    data = _pickle(_movie())
    with pytest.raises(ValueError, match=r"^d/tt0000001.pkl: truncated or corrupted pickle"):
        read_movie_pickle(io.BytesIO(data[: len(data) // 2]), "d/tt0000001.pkl")


def test_trailing_garbage_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^tt0000001.pkl: corrupted pickle \(unexpected data after the end"):
        read_movie_pickle(io.BytesIO(_pickle(_movie()) + b"xx"), "tt0000001.pkl")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"tt0000001.pkl: cannot read the file"):
        read_movie_pickle(tmp_path / "tt0000001.pkl", "tt0000001.pkl")


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_zip_movies_at_any_depth_in_file_name_order(tmp_path):
    archive = _zip(tmp_path / "data.zip", {
        "data/tt0000003.pkl": _pickle(_movie("tt0000003")),
        "tt0000001.pkl": _pickle(_movie("tt0000001")),
        "a/b/c/tt0000002.pkl": _pickle(_movie("tt0000002")),
        "__MACOSX/data/._tt0000003.pkl": b"\x00\x05\x16\x07 resource fork",
        "data/README.txt": b"not a movie",
    })
    assert [m.imdb_id for m in iter_movies(archive)] == ["tt0000001", "tt0000002", "tt0000003"]


def test_folder_movies_in_file_name_order(tmp_path):
    for i in (2, 1):
        (tmp_path / f"tt000000{i}.pkl").write_bytes(_pickle(_movie(f"tt000000{i}")))
    (tmp_path / "notes.pkl").write_bytes(b"ignored: not tt*.pkl")
    assert [m.imdb_id for m in iter_movies(tmp_path)] == ["tt0000001", "tt0000002"]


def test_duplicate_ids_in_a_zip_are_an_error(tmp_path):
    data = _pickle(_movie())
    archive = _zip(tmp_path / "data.zip", {"a/tt0000001.pkl": data, "b/tt0000001.pkl": data})
    with pytest.raises(ValueError, match=r"data.zip!b/tt0000001.pkl: duplicate imdb id tt0000001, also in .*data.zip!a/tt0000001.pkl"):
        list(iter_movies(archive))


def test_truncated_zip_is_a_clear_error(tmp_path):
    good = _zip(tmp_path / "good.zip", {"data/tt0000001.pkl": _pickle(_movie())}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut.zip: not a readable zip archive"):
        list(iter_movies(tmp_path / "cut.zip"))


def test_corrupted_zip_member_is_a_clear_error(tmp_path):
    data = _pickle(_movie())
    raw = bytearray(_zip(tmp_path / "ok.zip", {"data/tt0000001.pkl": data}, zipfile.ZIP_STORED).read_bytes())
    i = raw.index(data) + len(data) // 2  # flip a byte inside the stored float data: only the CRC notices
    raw[i] ^= 0xFF
    (tmp_path / "bad.zip").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad.zip!data/tt0000001.pkl: truncated or corrupted pickle \(BadZipFile: Bad CRC-32"):
        list(iter_movies(tmp_path / "bad.zip"))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere.zip: expected a zip archive or a folder of tt\*.pkl, found nothing there"):
        list(iter_movies(tmp_path / "nowhere.zip"))


def test_a_loaded_movie_is_freed_without_waiting_for_the_cyclic_gc():
    """Streaming keeps memory near one movie only if nothing (e.g. the unpickler's memo) holds it."""
    data = _pickle(_movie())
    gc.disable()
    try:
        m = read_movie_pickle(io.BytesIO(data), "tt0000001.pkl")
        tensor = weakref.ref(m.features["place"].base)  # the torch tensor the array views
        del m
        assert tensor() is None
    finally:
        gc.enable()
