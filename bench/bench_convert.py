"""Benchmark: safe-load + validate + convert a synthetic set of the real size (64 movies, 106,041 shots).

The movies carry the published ids and shot counts (from the manifest), so the set checks pass as
for the real archive. Each conversion runs in a fresh child process, which reports its own time,
per-movie times and peak RSS: the peak should stay near one movie, not the ~1.4 GiB set.

    .venv/bin/python bench/bench_convert.py [--work /tmp/sceneseg-bench] [--no-zip] [--keep]
    .venv/bin/python bench/bench_convert.py --difficulty   # how hard the synthetic sample is
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np


def _rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _du_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def make_pickles(folder: Path) -> float:
    """Write the 64 manifest-sized synthetic pickles; returns seconds."""
    from sceneseg.data.synthetic import generate_movie
    from sceneseg.data.validate import load_manifest

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    for k, (imdb_id, n_shots) in enumerate(sorted(load_manifest().items())):
        with open(folder / f"{imdb_id}.pkl", "wb") as f:
            pickle.dump(generate_movie(np.random.default_rng(k), imdb_id, n_shots), f)
    return time.perf_counter() - start


def make_zip(folder: Path, archive: Path) -> float:
    """Zip the pickles in the archive's layout (data/tt*.pkl), deflate level 1; returns seconds."""
    start = time.perf_counter()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for p in sorted(folder.glob("tt*.pkl")):
            z.write(p, f"data/{p.name}")
    return time.perf_counter() - start


def convert_child(source: Path, out: Path) -> dict:
    """Run in the child: materialize('local', ...) and measure it."""
    from sceneseg.data.sources import materialize

    stamps: list[float] = []

    class Stamp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("converted "):
                stamps.append(time.perf_counter())

    logging.getLogger("sceneseg.data.sources").addHandler(Stamp())
    logging.getLogger("sceneseg.data.sources").setLevel(logging.INFO)
    rss_before = _rss_mib()
    start = time.perf_counter()
    summary = materialize("local", out, path=str(source), cache_dir=out.parent)
    total = time.perf_counter() - start
    per_movie = np.diff([start, *stamps])
    return {
        "summary": summary,
        "total_s": total,
        "per_movie_s_mean": float(per_movie.mean()),
        "per_movie_s_max": float(per_movie.max()),
        "rss_after_imports_mib": rss_before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def synthetic_difficulty(n_movies: int = 12, n_shots: int = 1200) -> None:
    """AP of the shipped baseline vs logistic regressions on 4-shot-window cosines (train 2/3, test 1/3)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    from sceneseg.data.movies import GT_KEY, MODALITIES, PRED_KEY
    from sceneseg.data.synthetic import generate_movie

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-6)

    def window_features(d: dict) -> np.ndarray:  # [N-1, 4 modalities x 4 pairs]
        cols = []
        for m in MODALITIES:
            f = d[m].numpy()
            i = np.arange(len(f) - 1)
            prev, cur, nxt, nxt2 = f[np.maximum(i - 1, 0)], f[i], f[i + 1], f[np.minimum(i + 2, len(f) - 1)]
            cols += [cos(cur, nxt), cos(prev, nxt), cos(cur, nxt2), cos(prev, nxt2)]  # adjacent pair first
        return np.stack(cols, 1)

    start = time.perf_counter()
    movies = [generate_movie(np.random.default_rng(k), f"tt{k:07d}", n_shots) for k in range(n_movies)]
    print(f"generated {n_movies} x {n_shots} shots in {time.perf_counter() - start:.2f} s")
    k = 2 * n_movies // 3
    x = [window_features(m) for m in movies]
    y = [m[GT_KEY].numpy() for m in movies]
    x_tr, y_tr, x_te, y_te = np.concatenate(x[:k]), np.concatenate(y[:k]), np.concatenate(x[k:]), np.concatenate(y[k:])
    adjacent = [0, 4, 8, 12]
    results = {
        "boundary rate (chance AP)": y_te.mean(),
        "shipped baseline": average_precision_score(y_te, np.concatenate([m[PRED_KEY].numpy() for m in movies[k:]])),
        "logreg, adjacent-shot cosines": average_precision_score(
            y_te, LogisticRegression(max_iter=3000).fit(x_tr[:, adjacent], y_tr).predict_proba(x_te[:, adjacent])[:, 1]),
        "logreg, 4-shot-window cosines": average_precision_score(
            y_te, LogisticRegression(max_iter=3000).fit(x_tr, y_tr).predict_proba(x_te)[:, 1]),
    }
    for name, value in results.items():
        print(f"{name}: {value:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/sceneseg-bench"))
    ap.add_argument("--no-zip", action="store_true", help="only convert from the folder of pickles")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--difficulty", action="store_true", help="print how hard the synthetic sample is, then exit")
    ap.add_argument("--child", nargs=2, type=Path, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(convert_child(*args.child)))
        return
    if args.difficulty:
        synthetic_difficulty()
        return

    work = args.work
    pickles = work / "pickles"
    if not pickles.exists() or len(list(pickles.glob("tt*.pkl"))) != 64:
        print(f"generating 64 synthetic movies (106,041 shots) in {pickles}: {make_pickles(pickles):.1f} s")
    sources = [("folder", pickles)]
    if not args.no_zip:
        archive = work / "data.zip"
        if not archive.exists():
            print(f"zipping to {archive}: {make_zip(pickles, archive):.1f} s")
        sources.append(("zip", archive))
    print(f"pickles: {_du_mib(pickles):.0f} MiB" + ("" if args.no_zip else f", zip: {_du_mib(work / 'data.zip'):.0f} MiB"))
    largest = max(p.stat().st_size for p in pickles.glob("tt*.pkl")) / 2**20
    print(f"largest movie pickle: {largest:.1f} MiB")

    for kind, source in sources:
        out = work / f"converted-{kind}"
        shutil.rmtree(out, ignore_errors=True)
        child = subprocess.run([sys.executable, __file__, "--child", str(source), str(out)],
                               check=True, capture_output=True, text=True)
        r = json.loads(child.stdout.strip().splitlines()[-1])
        s = r["summary"]
        print(f"[{kind}] {s['n_movies']} movies, {s['n_shots']} shots, published_set={s['published_set']}: "
              f"total {r['total_s']:.1f} s, per movie {r['per_movie_s_mean']:.2f} s (max {r['per_movie_s_max']:.2f} s), "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB (after imports {r['rss_after_imports_mib']:.0f} MiB), "
              f"converted size {_du_mib(out):.0f} MiB")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
