"""Bring movies in: the synthetic sample, the MovieScenes archive, local pickles, or your own videos.

Whatever the source, movies take the same path: safe-load each pickle (safeload), validate it
(validate), save it in the converted format (movies.save_movie), one movie at a time. The
output folder is built next to ``out`` and renamed into place at the end, so a failure never
leaves a partial ``out`` (nor temp folders).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from sceneseg.data.download import MOVIESCENES_GDRIVE_ID, fetch_archive
from sceneseg.data.movies import Movie, load_movies, save_movie, write_index
from sceneseg.data.safeload import iter_movies
from sceneseg.data.synthetic import SyntheticSpec, write_synthetic_pickles
from sceneseg.data.validate import check_set
from sceneseg.progress import progress

log = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("synthetic", "moviescenes", "local", "video")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


def check_source(source: str, path: str = "") -> None:
    """Fail fast (ValueError, one line) on an unknown ``data.source`` or a missing ``data.path``."""
    if source not in SOURCES:
        raise ValueError(f"data.source: expected one of {', '.join(SOURCES)}, found {source!r}")
    if source == "local":
        if not path:
            raise ValueError("data.path: expected a zip archive or a folder of tt*.pkl for data.source: local, found ''")
        p = Path(path)
        if not p.exists():
            raise ValueError(f"data.path: expected a zip archive or a folder of tt*.pkl, {path} does not exist")
        if not (p.is_dir() or p.is_file()):
            raise ValueError(f"data.path: expected a zip archive or a folder of tt*.pkl, {path} is neither")
    if source == "video" and not (path and Path(path).is_dir()):
        found = "''" if not path else f"{path} ({'a file' if Path(path).exists() else 'nothing there'})"
        raise ValueError(f"data.path: expected a folder of videos with their <name>.scenes.csv for data.source: video, "
                         f"found {found}")


def video_files(folder: Path) -> list[Path]:
    """The videos of a folder (by suffix, hidden files skipped), sorted by name; none is a ValueError."""
    found = sorted(p for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
    if not found:
        raise ValueError(f"data.path: expected videos ({' '.join(VIDEO_SUFFIXES)}) in {folder}, found none")
    return found


def _video_movies(folder: Path, video, cache_dir: Path, warnings: list[str]) -> Iterator[Movie]:
    """The labelled movies of a folder of videos, one at a time (features from the cache when there)."""
    from sceneseg.video.movie import annotated_movie  # PyAV and PySceneDetect only for this source

    seen: dict[str, Path] = {}
    for path in video_files(folder):
        movie, problems = annotated_movie(path, video, cache_dir, log=log.info)
        if movie.imdb_id in seen:
            raise ValueError(f"{path}: its movie id {movie.imdb_id!r} is also that of {seen[movie.imdb_id]}: rename one")
        seen[movie.imdb_id] = path
        for p in problems:
            log.warning(p)
        warnings += problems
        yield movie


@contextmanager
def _atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; on success it replaces ``out``, on error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary folder
    try:
        yield tmp
        old = None
        if out.exists():  # DVC removes outputs first; outside DVC keep the swap short
            old = out.with_name(tmp.name.replace(".building.", ".old."))
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _convert(movies: Iterable[Movie], out: Path) -> dict[str, int]:
    """Save each movie as soon as it is read (memory stays near one movie): imdb id -> shots."""
    counts = {}
    for movie in progress(movies, desc="convert", unit="movie"):
        save_movie(movie, out)
        counts[movie.imdb_id] = movie.n_shots
        log.info("converted %s (%d shots)", movie.imdb_id, movie.n_shots)
        del movie  # free it before the next one is read
    return counts


def materialize(
    source: str,
    out: Path,
    *,
    path: str = "",
    gdrive_id: str = MOVIESCENES_GDRIVE_ID,
    url: str = "",
    cache_dir: Path,
    timeout_s: float = 60.0,
    retries: int = 3,
    synthetic: SyntheticSpec | None = None,
    video=None,
) -> dict:
    """Write the converted movies of ``source`` and ``index.json`` into ``out``, atomically.

    - ``synthetic``: generate ``synthetic`` (a SyntheticSpec) as pickles, then convert them.
    - ``moviescenes``: fetch the archive (Drive id ``gdrive_id``, or ``url`` when non-empty) into
      ``cache_dir``; the content must be exactly the published set (manifest ids and shot counts).
    - ``local``: ``path`` is a zip or a folder of tt*.pkl; another set than the published one
      is accepted with warnings (logged, recorded in index.json), format checks still apply.
    - ``video``: ``path`` is a folder of videos, each with its ``<stem>.scenes.csv``; ``video`` (the
      ``data.video`` params) says how shots and features are made; features are cached under
      ``cache_dir``; scene starts not aligned to a cut are warnings.

    Returns a summary (source, n_movies, n_shots, n_boundaries, published_set, warnings, seconds).
    Raises ValueError on bad input, download.DownloadFailed when the archive cannot be fetched.
    """
    check_source(source, path)
    out = Path(out)
    start = time.perf_counter()
    info: dict = {"source": source}
    warnings: list[str] = []
    with _atomic_dir(out) as tmp:
        if source == "synthetic":
            if synthetic is None:
                raise ValueError("synthetic: data.source synthetic needs a SyntheticSpec, got None")
            with tempfile.TemporaryDirectory(prefix=f".{out.name}.pickles.", dir=out.parent) as pickles:
                write_synthetic_pickles(synthetic, Path(pickles))
                counts = _convert(iter_movies(Path(pickles)), tmp)
            info["synthetic"] = asdict(synthetic)
            published = False
        elif source == "moviescenes":
            archive = fetch_archive(cache_dir, gdrive_id=gdrive_id, url=url, timeout_s=timeout_s, retries=retries)
            try:
                counts = _convert(iter_movies(archive), tmp)
                check_set(counts, str(archive), strict=True)
            except ValueError as e:
                raise ValueError(f"{e} (if the cached archive is damaged, delete {archive} to download again)") from None
            info["origin"] = url or gdrive_id
            published = True
        elif source == "video":
            counts = _convert(_video_movies(Path(path), video, cache_dir, warnings), tmp)
            info["path"] = path
            info["video"] = asdict(video)
            info["extractor"] = sorted({m.extractor for m in load_movies(tmp, sorted(counts))})
            published = False
        else:
            counts = _convert(iter_movies(Path(path)), tmp)
            warnings = check_set(counts, path, strict=False)
            info["path"] = path
            published = not warnings
        movies = load_movies(tmp, sorted(counts))  # memory-mapped: only shapes are read
        n_boundaries = sum(int(m.boundary.sum()) for m in movies if m.boundary is not None)
        write_index(tmp, movies, {**info, "published_set": published, "warnings": warnings})
    return {
        "source": source,
        "n_movies": len(counts),
        "n_shots": sum(counts.values()),
        "n_boundaries": n_boundaries,
        "published_set": published,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - start, 2),
    }
