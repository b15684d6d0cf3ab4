"""A user's own annotated movies: a ``local`` set whose pickles carry no shipped prediction (or
only some of them do) goes through the real stages, download to evaluate, with every model and
reference; the shipped row says it is absent, and one line says which movies lack it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import yaml
from test_pipeline import tiny_params
from test_resume import run_data_stages, run_stage

from sceneseg.data.movies import PRED_KEY, load_movies
from sceneseg.data.synthetic import SyntheticSpec, write_synthetic_pickles
from sceneseg.models.checkpoint import load_checkpoint

DATA = ["--movies", "data/movies", "--split", "data/split.json", "--windows", "data/windows",
        "--features", "data/features"]
SYSTEMS = ("model", "boosted", "stacked", "chance")


def local_set(d: Path, keep: set[str] | None = None) -> list[str]:
    """Synthetic pickles in ``d/pickles`` with the shipped prediction deleted (except in ``keep``); their ids."""
    paths = write_synthetic_pickles(SyntheticSpec(5, 30, 45, seed=1), d / "pickles")
    for path in paths:
        movie = pickle.loads(path.read_bytes())
        if movie["imdb_id"] not in (keep or set()):
            del movie[PRED_KEY]
        path.write_bytes(pickle.dumps(movie))
    return sorted(p.stem for p in paths)


def run_pipeline(d: Path, model: str) -> tuple[dict, dict, dict]:
    """The stages download to evaluate in ``d``; (eval metrics, per-movie metrics, train metrics)."""
    p = tiny_params()
    p["data"].update(source="local", path=str(d / "pickles"))
    p["train"].update(model=model, num_threads=1)
    p["simseq"]["tree_iters"] = 20
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    run_data_stages(d)
    run_stage("train", d, *DATA, "--model", "models/model.pt", "--metrics", "metrics/train.json",
              "--details", "results/train.json", "--plots", "plots/train")
    run_stage("evaluate", d, *DATA, "--model", "models/model.pt", "--metrics", "metrics/eval.json",
              "--details", "results/eval.json", "--per_movie", "results/per_movie.json",
              "--predictions", "results/predictions.json", "--plots", "plots/eval", "--figures", "plots/eval/figures")
    return tuple(json.loads((d / f"results/{f}.json").read_text()) for f in ("eval", "per_movie", "train"))


@pytest.mark.parametrize("model", ["simseq", "lgss"])
def test_a_set_without_shipped_predictions_trains_and_evaluates(model, tmp_path, capsys):
    ids = local_set(tmp_path)
    ev, per_movie, tr = run_pipeline(tmp_path, model)
    out = capsys.readouterr().out
    for system in SYSTEMS:
        assert 0.0 <= ev[system]["AP"] <= 1.0 and 0.0 <= ev[system]["Miou"] <= 1.0, system
    test = json.loads((tmp_path / "data/split.json").read_text())["test"]
    assert ev["shipped"] == {"absent": f"no shipped prediction in any of the {len(test)} test movies"}
    headline = json.loads((tmp_path / "metrics/eval.json").read_text())  # the DVC metrics say so too
    assert headline["shipped"] == ev["shipped"] and headline["boosted"]["AP"] == ev["boosted"]["AP"]
    assert "shipped" not in per_movie
    # dvc.yaml declares the file: it exists (else `dvc repro` fails the stage), with no points
    assert json.loads((tmp_path / "plots/eval/pr_shipped.json").read_text()) == []
    assert json.loads((tmp_path / "plots/eval/pr_boosted.json").read_text())
    assert tr["model"] == model and tr["test_loss"] > 0
    assert "evaluate: no shipped prediction in any of the 5 movies: the references read the features alone" in out
    if model == "simseq":
        assert "train: no shipped prediction in any of the 5 movies: simseq reads the features alone" in out
    doc = json.loads((tmp_path / "data/movies/index.json").read_text())
    assert [m["imdb_id"] for m in doc["movies"]] == ids
    assert not list((tmp_path / "data/movies").glob("*/baseline.npy"))


def test_a_set_where_some_movies_have_it_uses_it_nowhere_and_says_which_lack_it(tmp_path, capsys):
    ids = local_set(tmp_path)
    keep = set(ids[:2])
    local_set(tmp_path, keep)
    ev, per_movie, _ = run_pipeline(tmp_path, "simseq")
    out = capsys.readouterr().out
    line = f"no shipped prediction in 3 of the 5 movies ({' '.join(ids[2:])})"
    assert f"train: {line}: simseq reads the features alone" in out
    assert f"evaluate: {line}: the references read the features alone" in out
    for system in SYSTEMS:
        assert 0.0 <= ev[system]["AP"] <= 1.0, system
    # the model reads the features alone, also on a movie that has the shipped prediction
    ckpt = load_checkpoint(tmp_path / "models/model.pt")
    with_it = load_movies(tmp_path / "data/movies", sorted(keep))
    assert all(m.baseline is not None for m in with_it)
    assert ckpt.kind.inputs_used(ckpt.config, with_it[0]) == ["place", "cast", "action", "audio"]
    test = json.loads((tmp_path / "data/split.json").read_text())["test"]
    lacking = sorted(set(test) - keep)
    assert lacking  # the last ids are the test movies (split.test_movies: last)
    assert ev["shipped"] == {"absent": f"no shipped prediction in any of the {len(test)} test movies"
                             if len(lacking) == len(test) else
                             f"no shipped prediction in {len(lacking)} of the {len(test)} test movies ({' '.join(lacking)})"}
    assert "shipped" not in per_movie
