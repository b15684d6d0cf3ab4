"""Seconds per training epoch of the default model at the real data's size, this code against an
older revision's, alternating in one run (so both see the same machine load).

    .venv/bin/python bench/bench_simseq_epochs.py --before 6c3d202 [--epochs 3] [--repeats 2] [--threads 1]

Generates (once, in ``--workdir``) 64 synthetic movies with the real shot counts of
sceneseg/data/moviescenes_manifest.csv and the real feature dimensions, splits them with params.yaml's
split and computes their similarity features as the features stage does. Then, in a fresh process
per run, trains simseq for ``--epochs`` epochs with each version's own params.yaml (trees off,
no early stop) and prints the seconds per epoch (validation included; loading the cached
features and the final test pass counted too, the same in both) and the last epoch's validation AP.
The older version's ``sceneseg`` package and params.yaml come from ``git archive``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import sys, time, dataclasses
code, params_file, root, epochs, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if code != "-":  # the older revision's package, ahead of the editable install's finder
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, code)
from pathlib import Path
import torch
from sceneseg.config import load_params
from sceneseg.models.base import TrainData
try:  # the layout since issue 20: data/ and a registry that parses each model's own section
    from sceneseg.data.movies import read_index
    from sceneseg.data.split import split_all_windows, split_movies
    from sceneseg.models.registry import get_model, model_params
    LAYOUT = 2
except ImportError:  # an older revision
    from sceneseg.movies import read_index
    from sceneseg.split import split_all_windows, split_movies
    from sceneseg.models import get_model
    LAYOUT = 1
torch.set_num_threads(threads)
params, root = load_params(params_file), Path(root)
n_shots = {m["imdb_id"]: m["n_shots"] for m in read_index(root / "movies")["movies"]}
s = params.split
split = split_movies(sorted(n_shots), s.test_fraction, s.test_movies, s.val_fraction, s.val_by, s.seed)
wins = split_all_windows(split, n_shots, params.featurize.seq_len, s.val_by, s.val_fraction, s.seed)
data = (TrainData(root / "movies", split, wins, root / "features") if LAYOUT == 2 else
        TrainData(root / "movies", split, wins, params.featurize.shot_num, root / "features"))
for name in ("train", "val", "test"):
    data.movies(name)  # the cached features, memory-mapped: not timed
own = model_params(params, "simseq") if LAYOUT == 2 else params.models["simseq"]
p = dataclasses.replace(own, tree_iters=0, patience=0)
t = time.perf_counter()
trained = get_model("simseq").train(data, p, dataclasses.replace(params.train, epochs=epochs),
                                    torch.device("cpu"), progress=False)
seconds = time.perf_counter() - t
print(f"RESULT {seconds / len(trained.train_loss):.2f} {trained.extra['val_ap']:.4f}")
'''


def prepare(root: Path) -> None:
    """64 real-size movies and their similarity features (this code's features stage)."""
    from sceneseg.config import load_params
    from sceneseg.data.featurecache import write_features
    from sceneseg.data.sources import materialize
    from sceneseg.data.synthetic import SyntheticSpec
    from sceneseg.models.registry import model_params
    from sceneseg.models.simseq.features import feature_spec

    if not (root / "movies" / "index.json").exists():
        materialize("synthetic", root / "movies", cache_dir=root, synthetic=SyntheticSpec(64, seed=0, length_scale=1.0))
    if not (root / "features" / "spec.json").exists():
        p = model_params(load_params(ROOT / "params.yaml"), "simseq")
        write_features(root / "movies", root / "features", feature_spec({
            "feature_dims": p.modalities, "widths": p.widths, "cross_widths": p.cross_widths,
            "match_widths": p.match_widths}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision to compare with")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_simseq_epochs"))
    args = ap.parse_args()
    prepare(args.workdir)
    old = args.workdir / f"code-{args.before}"
    if not old.exists():
        old.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", args.before, "sceneseg", "params.yaml"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    versions = {"now": ("-", ROOT / "params.yaml"), args.before: (str(old), old / "params.yaml")}
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in versions}
    for _ in range(args.repeats):
        for name, (code, params_file) in versions.items():
            out = subprocess.run([sys.executable, "-c", CHILD, code, str(params_file), str(args.workdir),
                                  str(args.epochs), str(args.threads)], capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
            if line is None:
                raise SystemExit(f"{name}: the run failed:\n{out.stderr[-2000:]}")
            epoch_s, val_ap = map(float, line.split()[1:])
            results[name].append((epoch_s, val_ap))
            print(f"{name}: {epoch_s:.2f} s per epoch, validation AP after {args.epochs} epochs {val_ap:.4f}",
                  file=sys.stderr, flush=True)
    best = {name: min(s for s, _ in runs) for name, runs in results.items()}
    for name, runs in results.items():
        print(f"{name}: " + ", ".join(f"{s:.2f}" for s, _ in runs) + f" s per epoch (best {best[name]:.2f}); "
              f"validation AP {runs[-1][1]:.4f}")
    print(f"speed-up (best of each): {best[args.before] / best['now']:.2f}x; {args.threads} thread(s), "
          f"{args.epochs} epochs per run")


if __name__ == "__main__":
    main()
