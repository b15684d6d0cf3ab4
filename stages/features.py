"""Stage features: the default model's similarity features of every movie (window cosines and
cross matches per modality, sceneseg.data.simfeatures), computed once per movie set and feature params,
so train and evaluate read them instead of computing them in every experiment."""

import _venv  # noqa: F401  (first: one line, not a traceback, when .venv is not active)

import time
from pathlib import Path

from sceneseg.data.featurecache import FeatureSpec, write_features
from sceneseg.data.movies import load_movies, present_modalities
from sceneseg.models.simseq.params import parse
from sceneseg.stage import run, stage_args, writing


def main(args, params) -> None:
    p = parse(params.models["simseq"], args.params)  # the widths of simseq's own section
    # the configured modalities that the movies have (train uses the same: movies made from videos have no cast)
    used, note = present_modalities(p.modalities, load_movies(Path(args.movies)), "simseq.modalities")
    if note:
        print(f"features: {note}")
    spec = FeatureSpec(tuple(used), tuple(p.widths), tuple(p.cross_widths), tuple(p.match_widths))
    t0 = time.perf_counter()
    with writing(args.out):
        n = write_features(Path(args.movies), Path(args.out), spec)
    print(f"features: {n} transitions x {spec.n_columns} features (modalities {list(spec.modalities)}, widths "
          f"{list(spec.widths)}, cross widths {list(spec.cross_widths)}, match widths {list(spec.match_widths)}) in "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "out"]))
