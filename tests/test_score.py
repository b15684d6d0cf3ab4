"""`sceneseg score DIR` on pickles shaped like MovieScenes' (dicts of torch tensors)."""

from __future__ import annotations

import argparse
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sceneseg.data.movies import END_FRAME_KEY, FEATURE_DIMS, GT_KEY, PRED_KEY
from sceneseg.evaluation import score
from sceneseg.evaluation import metrics


def movie_dict(imdb_id: str, n: int, seed: int, dim_scale: int = 1) -> dict:
    """A MovieScenes-like pickle payload; feature widths shrunk by ``dim_scale`` unless 1."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n - 1, generator=g) < 0.1
    d = {
        "imdb_id": imdb_id,
        GT_KEY: gt,
        END_FRAME_KEY: torch.cumsum(torch.randint(1, 300, (n,), generator=g), 0),
        PRED_KEY: torch.clamp(gt * 0.4 + torch.rand(n - 1, generator=g) * 0.7, 0, 1),
    }
    for m, dim in FEATURE_DIMS.items():
        d[m] = torch.rand(n, dim // dim_scale, generator=g)
    return d


def write_pickles(folder: Path, dicts: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for d in dicts:
        with open(folder / f"{d['imdb_id']}.pkl", "wb") as f:
            pickle.dump(d, f)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = score.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_score_prints_eluvio_keys_and_values(tmp_path, capsys):
    dicts = [movie_dict(f"tt000000{i}", n, seed=i) for i, n in enumerate([40, 75, 120])]
    write_pickles(tmp_path, dicts)
    (tmp_path / "notes.txt").write_text("ignored: not tt*.pkl")
    rc, out, err = run_cli([str(tmp_path)], capsys)
    assert rc == 0, err
    scores = json.loads(out)
    assert list(scores)[:8] == ["AP", "mAP", "Miou", "Precision", "Recall", "F1", "AP_dict", "Miou_dict"]
    gt = {d["imdb_id"]: d[GT_KEY].numpy() for d in dicts}
    pr = {d["imdb_id"]: d[PRED_KEY].numpy() for d in dicts}
    ends = {d["imdb_id"]: d[END_FRAME_KEY].numpy() for d in dicts}
    expect = metrics.evaluate(gt, pr, ends)
    for k in ("AP", "mAP", "Miou", "Precision", "Recall", "F1"):
        assert scores[k] == pytest.approx(expect[k], abs=1e-12)
    assert scores["AP_dict"] == pytest.approx(expect["AP_dict"], abs=1e-12)
    assert scores["n_movies"] == 3
    # The downloaded zip scores the same as its unpacked folder.
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        for d in dicts:
            z.write(tmp_path / f"{d['imdb_id']}.pkl", f"data/{d['imdb_id']}.pkl")
    rc, out_zip, err = run_cli([str(tmp_path / "data.zip")], capsys)
    assert rc == 0 and json.loads(out_zip)["Miou_dict"] == scores["Miou_dict"], err
    # --threshold moves Miou but not AP.
    rc, out2, _ = run_cli([str(tmp_path), "--threshold", "0.9"], capsys)
    s2 = json.loads(out2)
    assert rc == 0 and s2["AP"] == scores["AP"] and s2["Miou"] != scores["Miou"]


def test_score_registers_on_a_parent_parser(tmp_path):
    parser = argparse.ArgumentParser(prog="sceneseg")
    score.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["score", str(tmp_path), "--threshold", "0.3"])
    assert args.dir == tmp_path and args.threshold == 0.3 and args.func is score.run


def shorten_prediction(d: dict) -> None:
    d[PRED_KEY] = d[PRED_KEY][:-1]


def push_prediction_above_one(d: dict) -> None:
    d[PRED_KEY][3] = 1.5


def drop_prediction(d: dict) -> None:
    del d[PRED_KEY]


@pytest.mark.parametrize(
    "spoil, message",
    [(shorten_prediction, r"tt0000001.*\[29\]"), (push_prediction_above_one, r"tt0000001.*\[0, 1\]"),
     (drop_prediction, r"movie tt0000001 carries no scene_transition_boundary_prediction \(baseline.npy\) to score; "
                       r"give the probabilities with --predictions FILE$")],
)
def test_score_bad_prediction_exits_non_zero(tmp_path, capsys, spoil, message):
    d = movie_dict("tt0000001", 30, seed=0)
    spoil(d)
    write_pickles(tmp_path, [d, movie_dict("tt0000002", 30, seed=1)])
    rc, out, err = run_cli([str(tmp_path)], capsys)
    assert rc == 1 and out == ""
    assert re.search(message, err), err


def test_score_empty_folder(tmp_path, capsys):
    (tmp_path / "tt0000001.npy").write_bytes(b"")
    rc, out, err = run_cli([str(tmp_path)], capsys)
    assert rc == 1 and out == "" and "tt*.pkl, found none" in err


def test_score_missing_folder(tmp_path, capsys):
    rc, _, err = run_cli([str(tmp_path / "nope")], capsys)
    assert rc == 1 and "found nothing there" in err


def test_score_refuses_a_pickle_that_runs_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "tt0000001.pkl").write_bytes(pickle.dumps({"imdb_id": Evil()}))
    rc, out, err = run_cli([str(tmp_path)], capsys)
    assert rc == 1 and "pwned" not in out and "refused" in err


def test_score_reads_converted_movies_and_a_predictions_file(tmp_path, capsys):
    """data/movies scores its shipped predictions (as the pickles do); --predictions scores a predict JSON."""
    from sklearn.metrics import average_precision_score

    from sceneseg.data.movies import save_movie
    from sceneseg.data.validate import movie_from_dict

    dicts = [movie_dict(f"tt000009{i}", n, seed=90 + i) for i, n in enumerate([40, 75, 60])]
    write_pickles(tmp_path / "pkl", dicts)
    for d in dicts:
        save_movie(movie_from_dict(d, f"{d['imdb_id']}.pkl"), tmp_path / "movies")
    (tmp_path / "movies" / "index.json").write_text("{}")
    rc, from_pickles, _ = run_cli([str(tmp_path / "pkl")], capsys)
    rc2, converted, err = run_cli([str(tmp_path / "movies")], capsys)
    assert rc == rc2 == 0, err
    a, b = json.loads(from_pickles), json.loads(converted)
    for k in ("AP", "mAP", "Miou", "Precision", "Recall", "F1", "AP_dict", "Miou_dict"):
        assert b[k] == pytest.approx(a[k], abs=1e-7), k  # the converted copy keeps the prediction in float32
    # a predictions file for two of the three movies: only those are scored, with its probabilities
    rng = torch.Generator().manual_seed(5)
    probs = {d["imdb_id"]: torch.rand(len(d[GT_KEY]), generator=rng).double().numpy() for d in dicts[:2]}
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"model": "x", "movies": [{"imdb_id": k, "boundary_prob": v.tolist()} for k, v in probs.items()]}))
    rc, out, err = run_cli([str(tmp_path / "movies"), "--predictions", str(pred)], capsys)
    assert rc == 0, err
    s = json.loads(out)
    gt = {d["imdb_id"]: d[GT_KEY].numpy() for d in dicts[:2]}
    assert s["n_movies"] == 2 and sorted(s["AP_dict"]) == sorted(probs)
    pooled = average_precision_score(np.concatenate(list(gt.values())), np.concatenate([probs[k] for k in gt]))
    assert s["AP"] == pytest.approx(pooled, abs=1e-12)
    assert s["AP_dict"]["tt0000090"] == pytest.approx(average_precision_score(gt["tt0000090"], probs["tt0000090"]), abs=1e-12)
    # the pickles' folder takes a predictions file too
    rc, out_pkl, _ = run_cli([str(tmp_path / "pkl"), "--predictions", str(pred)], capsys)
    assert rc == 0 and json.loads(out_pkl)["AP"] == s["AP"]


@pytest.mark.parametrize("doc,message", [
    ({"movies": [{"imdb_id": "tt0000099", "boundary_prob": [0.5] * 39}]}, "expected the ground truth of every predicted movie, missing tt0000099"),
    ({"movies": [{"imdb_id": "tt0000090", "boundary_prob": [1.5] * 39}]}, "movie tt0000090: expected probabilities in [0, 1]"),
    ({"scenes": []}, "expected the JSON of `sceneseg predict` (a 'movies' list)"),
    ({"movies": [{"imdb_id": "tt0000090", "boundary_prob": [0.5] * 3}]}, "tt0000090"),
])
def test_score_bad_predictions_file_is_one_line(tmp_path, capsys, doc, message):
    write_pickles(tmp_path / "pkl", [movie_dict("tt0000090", 40, seed=1)])
    (tmp_path / "pred.json").write_text(json.dumps(doc))
    rc, out, err = run_cli([str(tmp_path / "pkl"), "--predictions", str(tmp_path / "pred.json")], capsys)
    assert rc == 1 and out == "" and err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
