"""Seconds `sceneseg predict` takes for all transitions of one long movie at the real sizes.

A 3,096-shot movie (the longest of MovieScenes; a realistic synthetic one, features
2048/512/512/512 and the shipped prediction), converted to a movie folder, and a model saved and
loaded as a real checkpoint:

- ``--model simseq`` (default): the default model at its default size (params.yaml ``simseq``),
  its GRU randomly initialised and its boosted trees (``tree_iters`` of them with the shipped input,
  ``bare_tree_fits`` x ``tree_iters`` without it) fitted on another synthetic real-size movie, so the
  trees have their real depth;
- ``--model lgss``: a randomly initialised LGSS of the published size (512 channels, LSTM hidden
  512, fc 100, seq_len 10).

Times the whole command path (find, load, check, similarity features, forward, scenes; JSON
formatting included) on the chosen device, with ``--threads`` applied as ``sceneseg predict``
applies it (torch and numpy's BLAS), for a few batch sizes (LGSS's windows; the default model
reads the whole movie at once), and where the time goes: each part is the time spent in the
functions the command calls for it (load: checkpoint, movie, checks; features; trees; network:
the GRU net or LGSS; rest: finding the movie, scenes, JSON), as measured in the fastest of the
repeats. ``--before REV`` also runs ``sceneseg/predict.py`` and ``sceneseg/models/simseq/trees.py`` as
they were at the git revision REV, alternating with today's in the same run (a ratio per part,
and the largest difference of the written probabilities). The machine's load average is printed
before and after: compare ratios within one run.

    .venv/bin/python bench/bench_predict.py [--model simseq] [--shots 3096] [--device auto] [--threads 1] [--before REV]
                                            [--ignore-shipped]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import types
from contextlib import contextmanager
from pathlib import Path

import lightgbm as lgb
import numpy as np
import torch

import sceneseg.models.checkpoint
import sceneseg.models.simseq.kind
import sceneseg.predict
from sceneseg.config import load_params
from sceneseg.data.movies import END_FRAME_KEY, FEATURE_DIMS, GT_KEY, PRED_KEY, Movie, save_movie
from sceneseg.data.synthetic import generate_movie
from sceneseg.models.checkpoint import save_checkpoint
from sceneseg.models.lgss.network import LGSS, ModelConfig
from sceneseg.models.registry import model_params
from sceneseg.models.simseq.features import movie_features, tree_inputs
from sceneseg.models.simseq.network import SimSeqNet, SimSeqTrees
from sceneseg.models.simseq.training import bare_fits, tree_params
from sceneseg.models.simseq.trees import TreeEnsemble
from sceneseg.predict import format_json

ROOT = Path(__file__).resolve().parents[1]


def synthetic(imdb_id: str, n: int, seed: int) -> Movie:
    d = generate_movie(np.random.default_rng(seed), imdb_id, n)
    return Movie(imdb_id, {m: d[m].numpy() for m in FEATURE_DIMS}, d[GT_KEY].numpy().astype(bool),
                 d[END_FRAME_KEY].numpy(), d[PRED_KEY].numpy())


def simseq_model(shots: int) -> tuple[torch.nn.Module, dict]:
    """The default model, its trees fitted on the features of a synthetic movie of ``shots`` shots."""
    p = model_params(load_params(ROOT / "params.yaml"), "simseq")
    cfg = {"feature_dims": {m: FEATURE_DIMS[m] for m in p.modalities}, "widths": list(p.widths),
           "cross_widths": list(p.cross_widths), "match_widths": list(p.match_widths), "use_shipped": p.use_shipped,
           "hidden": p.hidden, "dropout": p.dropout, "temporal": p.temporal, "dilations": list(p.dilations),
           "trees": {"context": p.tree_context}}
    movie = synthetic("tt0000002", shots, 1)
    x = tree_inputs(torch.from_numpy(movie_features(movie, cfg, True)), cfg).numpy()
    label = np.asarray(movie.boundary, dtype=np.float64)
    def fit(cols: np.ndarray, changes: dict):
        return lgb.train({**tree_params(p, 0), **changes, "num_threads": 1}, lgb.Dataset(cols, label=label),
                         p.tree_iters)

    fits = [TreeEnsemble.from_booster(fit(x, {})),  # with the shipped input; without it, as training fits them
            TreeEnsemble.from_boosters([fit(x[:, :-1], changes) for changes in bare_fits(p, 0)])]
    cfg["trees"]["shape"], cfg["trees"]["bare_shape"] = list(fits[0].feature.shape), list(fits[1].feature.shape)
    torch.manual_seed(0)
    model = SimSeqTrees(cfg)
    model.trees.load_state_dict(fits[0].state_dict())
    model.bare.load_state_dict(fits[1].state_dict())
    return model, cfg


def source_at(rev: str, path: str, name: str) -> types.ModuleType:
    """The file ``path`` of this repository as it was at git revision ``rev``, loaded as a module."""
    code = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True)
    mod = types.ModuleType(name)
    sys.modules[name] = mod  # dataclasses look their module up there
    exec(compile(code.stdout, f"{rev}:{path}", "exec"), mod.__dict__)
    return mod


def timed_parts(model: str, predict_mod: types.ModuleType) -> list[tuple[object, str, str]]:
    """(owner, attribute, part): the functions whose time makes up each part of a `predict` call."""
    parts = [(sceneseg.models.checkpoint, "load_checkpoint", "load"), (predict_mod, "read_movie", "load"),
             (predict_mod, "check_movie", "load")]
    if model == "simseq":
        return parts + [(sceneseg.models.simseq.kind, "movie_features", "features"), (SimSeqTrees, "tree_logits", "trees"),
                        (SimSeqNet, "forward", "network")]
    return parts + [(LGSS, "forward", "network")]


@contextmanager
def clocked(targets: list[tuple[object, str, str]], seconds: dict[str, float]):
    """Within the block each target adds the seconds of its calls to ``seconds[part]``."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]

    def clock(fn, part):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[part] += time.perf_counter() - t0
        return call

    for (owner, name, fn), (_, _, part) in zip(saved, targets):
        setattr(owner, name, clock(fn, part))
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


PARTS = ("load", "features", "trees", "network", "rest")


def run_once(version: dict, model: str, movie: Path, ckpt: Path, device: str, batch_size: int, threads: int,
             ignore_shipped: bool = False):
    """One `predict` of ``movie`` by ``version`` (its predict module, tree evaluation, thread setting):
    (total seconds, seconds per part, the output document)."""
    seconds = dict.fromkeys(PARTS, 0.0)
    forward = TreeEnsemble.forward
    TreeEnsemble.forward = version["trees_forward"]
    try:
        with clocked(timed_parts(model, version["predict"]), seconds), version["threads"](threads):
            t0 = time.perf_counter()
            extra = {"ignore_shipped": True} if ignore_shipped else {}  # the features alone: the other trees
            doc = version["predict"].predict_input(movie, ckpt, device_name=device, batch_size=batch_size, **extra)
            format_json(doc)
            total = time.perf_counter() - t0
    finally:
        TreeEnsemble.forward = forward
    seconds["rest"] = total - sum(seconds.values())
    return total, seconds, doc


@contextmanager
def torch_threads_only(n: int):
    """How `sceneseg predict --threads` set threads before it limited numpy's BLAS as well."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def versions(before: str) -> dict[str, dict]:
    """``now`` and, with ``before``, the predict path at that git revision."""
    out = {"now": {"predict": sceneseg.predict, "trees_forward": TreeEnsemble.forward,
                   "threads": sceneseg.predict.cpu_threads}}
    if before:
        old = source_at(before, "sceneseg/predict.py", "predict_before")
        out[before] = {"predict": old, "trees_forward": source_at(before, "sceneseg/models/simseq/trees.py",
                                                                  "trees_before").TreeEnsemble.forward,
                       "threads": getattr(old, "cpu_threads", torch_threads_only)}
    return out


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["simseq", "lgss"], default="simseq")
    ap.add_argument("--shots", type=int, default=3096)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-sizes", default="256")
    ap.add_argument("--threads", type=int, default=1, help="as `sceneseg predict --threads` (torch and numpy's BLAS); "
                    "0 = their defaults")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", default="", help="a git revision whose predict path to time as well, in the same run")
    ap.add_argument("--ignore-shipped", action="store_true",
                    help="as `sceneseg predict --ignore-shipped`: the features alone (simseq's trees fitted without it)")
    a = ap.parse_args()
    runs = versions(a.before)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_movie(synthetic("tt0000001", a.shots, 0), tmp)
        if a.model == "simseq":
            model, cfg = simseq_model(a.shots)
            about = (f"simseq: GRU hidden {cfg['hidden']}, widths {cfg['widths']}, cross widths {cfg['cross_widths']}, "
                     f"trees {cfg['trees']['shape']} and {cfg['trees']['bare_shape']} (trees x nodes)")
        else:
            cfg = ModelConfig(feature_dims=dict(FEATURE_DIMS),
                              fusion_weights={"place": 0.5, "cast": 0.2, "action": 0.2, "audio": 0.1})
            torch.manual_seed(0)
            model = LGSS(cfg)
            about = (f"lgss: sim_channel {cfg.sim_channel}, lstm_hidden {cfg.lstm_hidden}, fc_hidden {cfg.fc_hidden}, "
                     f"seq_len 10")
            cfg = {"net": cfg.to_dict(), "seq_len": 10}
        save_checkpoint(tmp / "model.pt", a.model, model, cfg, 0.5, "fixed", params={}, commit="bench")
        print(f"movie: {a.shots} shots ({a.shots - 1} transitions); model {about}; torch {torch.__version__}, "
              f"--threads {a.threads}{', --ignore-shipped' if a.ignore_shipped else ''}; {load_average()}")
        for bs in [int(x) for x in a.batch_sizes.split(",")]:
            results = {name: [] for name in runs}
            for _ in range(a.repeats):  # the versions alternate: both see the same load
                for name, version in runs.items():
                    results[name].append(run_once(version, a.model, tmp / "tt0000001", tmp / "model.pt", a.device,
                                                  bs, a.threads, a.ignore_shipped))
            print(f"batch {bs}:")
            best = {name: min(res, key=lambda r: r[0]) for name, res in results.items()}
            for name, res in results.items():
                total, parts, doc = best[name]
                m = doc["movies"][0]
                print(f"  {name:>10}: {total:6.2f} s best of {a.repeats} ({', '.join(f'{r[0]:.2f}' for r in res)}) "
                      f"on {doc['device']}; {(a.shots - 1) / total:,.0f} transitions/s; {m['n_scenes']} scenes; "
                      + ", ".join(f"{p} {parts[p]:.3f}" for p in PARTS))
            if a.before:
                now, old = best["now"], best[a.before]
                diff = np.abs(np.subtract(now[2]["movies"][0]["boundary_prob"], old[2]["movies"][0]["boundary_prob"]))
                print(f"  {a.before} / now: total {old[0] / now[0]:.1f}x; "
                      + ", ".join(f"{p} {old[1][p] / max(now[1][p], 1e-9):.1f}x" for p in PARTS)
                      + f"; largest difference of the written probabilities {diff.max():.1e}, same scenes: "
                      f"{now[2]['movies'][0]['scenes'] == old[2]['movies'][0]['scenes']}")
        print(load_average())


if __name__ == "__main__":
    main()
