"""The whole pipeline at the real data's size, timed stage by stage: a real run, not a projection.

    .venv/bin/python bench/bench_simseq_speed.py [--movies 64] [--length-scale 1.0] [-S simseq.batch_size=16 ...]
    .venv/bin/python bench/bench_simseq_speed.py --rev 6c3d202   # the pipeline as it was at a git revision
    .venv/bin/python bench/bench_simseq_speed.py --then simseq.lr=0.003   # then one experiment of a sweep

Makes a project in ``--workdir`` (this repository's dvc.yaml, params.yaml, stages/ and sceneseg/,
``dvc init --no-scm``; with ``--rev``, those files as they were at that git revision), sets the built-in sample to ``--movies`` movies with the real shot counts
of sceneseg/data/moviescenes_manifest.csv times ``--length-scale`` (64 x 1.0: the real 106,041 shots,
at the real feature dimensions), applies the ``-S key=value`` overrides, and runs each stage of
``dvc repro`` in order. Prints per stage the wall time and the peak RSS of its process tree, the
train stage's seconds per epoch and tree fit (from its log; the trees fit beside the epochs, and the log
says how long training then waited for them), and the run's AP and Miou
(metrics/eval.json). Threads: ``train.num_threads`` (0 = torch's default: every core).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("download", "split", "featurize", "features", "train", "evaluate")


def make_project(work: Path, movies: int, length_scale: float, overrides: list[str], rev: str | None) -> None:
    """A copy of the pipeline (at git revision ``rev``, else as it is) in ``work`` with the sample set
    to real-size movies and the overrides."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    names = ("dvc.yaml", "params.yaml", "stages", "sceneseg")
    if rev:
        archive = subprocess.run(["git", "archive", rev, *names], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    else:
        for name in names[:2]:
            shutil.copy(ROOT / name, work / name)
        for name in names[2:]:
            shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=work, check=True)
    subprocess.run(["dvc", "config", "core.analytics", "false"], cwd=work, check=True)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_movies=movies, min_shots=0, max_shots=0, length_scale=length_scale)
    params["data"]["cache_dir"] = str(work / ".cache")
    set_params(work, params, overrides)


def set_params(work: Path, params: dict, overrides: list[str]) -> None:
    """Write ``params`` with the ``key=value`` overrides to ``work``/params.yaml."""
    for item in overrides:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for k in parents:
            node = node[k]
        if leaf not in node:
            raise SystemExit(f"-S {item}: unknown params key '{key}'")
        node[leaf] = yaml.safe_load(value)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(work: Path, stage: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MiB of the stage's process tree, its output) of ``dvc repro -s stage``."""
    env = {**os.environ, "PYTHONPATH": str(work)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", "-s", stage], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} failed:\n{out[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, out  # ru_maxrss: KiB on Linux, the largest process of the tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movies", type=int, default=64)
    ap.add_argument("--length-scale", type=float, default=1.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_simseq_speed"))
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="params override key=value")
    ap.add_argument("--rev", default=None, help="run the pipeline's code and params as they were at this git revision")
    ap.add_argument("--then", action="append", default=[], metavar="KEY=VALUE",
                    help="after the run, change these params and time the `dvc repro` that follows (what "
                         "`dvc exp run -S KEY=VALUE` reruns: train and evaluate for a model key)")
    args = ap.parse_args()
    make_project(args.workdir, args.movies, args.length_scale, args.overrides, args.rev)
    rows, total, log = [], 0.0, {}
    for stage in STAGES:
        seconds, rss, out = run_stage(args.workdir, stage)
        total += seconds
        log[stage] = out
        rows.append((stage, seconds, rss))
        print(f"{stage}: {seconds:.1f} s, peak RSS {rss:.0f} MiB", file=sys.stderr, flush=True)
    index = json.loads((args.workdir / "data/movies/index.json").read_text())
    shots = sum(m["n_shots"] for m in index["movies"])
    ev = json.loads((args.workdir / "metrics/eval.json").read_text())
    epochs = re.search(r"train: (\d+) epochs in ([\d.]+) s \(([\d.]+) s per epoch", log["train"])
    trees = re.search(r"trees fitted in ([\d.]+) s(?: beside the network \(waited ([\d.]+) s)?", log["train"])
    threads = re.search(r"\((\d+) CPU threads", log["train"])
    print(f"{len(index['movies'])} movies, {shots} shots; code {args.rev or 'as checked out'}; "
          f"overrides {args.overrides or 'none'}; "
          f"{threads.group(1) if threads else '?'} CPU threads")
    print("| stage | seconds | peak RSS (MiB) |\n| --- | ---: | ---: |")
    for stage, seconds, rss in rows:
        print(f"| {stage} | {seconds:.1f} | {rss:.0f} |")
    print(f"| whole `dvc repro` | {total:.1f} | |")
    if epochs:
        print(f"train: {epochs.group(1)} epochs in {epochs.group(2)} s ({epochs.group(3)} s per epoch)"
              + (f", trees {trees.group(1)} s" if trees else "")
              + (f" beside them (then waited {trees.group(2)} s)" if trees and trees.group(2) else ""))
    if args.then:
        set_params(args.workdir, yaml.safe_load((args.workdir / "params.yaml").read_text()), args.then)
        env = {**os.environ, "PYTHONPATH": str(args.workdir)}
        t0 = time.perf_counter()
        out = subprocess.run(["dvc", "repro"], cwd=args.workdir, env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"dvc repro after --then failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        reran = re.findall(r"Running stage '(\w+)'", out.stdout)
        print(f"then {' '.join(args.then)}: `dvc repro` {time.perf_counter() - t0:.1f} s (reran {', '.join(reran)})")
        for line in re.findall(r"train: \d+ epochs in .*|train: trees fitted in .*", out.stdout):
            print(f"  {line}")
    flat = {k: v for k, v in ev.items() if isinstance(v, (int, float))}
    flat.update({f"{ref} {k}": v for ref, d in ev.items() if isinstance(d, dict) for k, v in d.items()
                 if isinstance(v, (int, float))})
    print("test movies: " + ", ".join(f"{k} {v:.3f}" for k, v in flat.items()))


if __name__ == "__main__":
    main()
