"""`sceneseg predict`: scenes and probabilities of movies from a checkpoint, on tiny movies and a tiny model.

Features keep the format's real widths (2048/512/512/512, so pickles pass validation); the model
is tiny (4 channels, hidden 6) and movies have a few dozen shots.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sceneseg import cli, predict
from sceneseg.data.movies import END_FRAME_KEY, FEATURE_DIMS, GT_KEY, Movie, save_movie
from sceneseg.models.checkpoint import save_checkpoint
from sceneseg.models.lgss.network import LGSS, ModelConfig

SEQ_LEN = 5


def tiny_checkpoint(path: Path, modalities=tuple(FEATURE_DIMS), threshold: float = 0.5, seed: int = 0,
                    seq_len: int = SEQ_LEN) -> LGSS:
    cfg = ModelConfig(feature_dims={m: FEATURE_DIMS[m] for m in modalities},
                      fusion_weights={m: 1.0 / len(modalities) for m in modalities},
                      shot_num=4, sim_channel=4, lstm_hidden=6, fc_hidden=5)
    torch.manual_seed(seed)
    model = LGSS(cfg).eval()
    save_checkpoint(path, "lgss", model, {"net": cfg.to_dict(), "seq_len": seq_len}, threshold, "f1", params={},
                    commit="test")
    return model


def tiny_features(n: int, seed: int, dims=FEATURE_DIMS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in dims.items()}


def tiny_movie(imdb_id: str, n: int, seed: int, labels: bool = True) -> Movie:
    rng = np.random.default_rng(seed + 1000)
    ends = np.cumsum(rng.integers(5, 40, size=n)).astype(np.int64)
    boundary = rng.random(n - 1) < 0.2 if labels else None
    return Movie(imdb_id, tiny_features(n, seed), boundary, ends if labels else None)


def write_pickle(folder: Path, imdb_id: str, n: int, seed: int, extra: dict | None = None) -> Path:
    """A user's movie as a MovieScenes pickle: torch tensors, no ground truth or baseline."""
    d = {"imdb_id": imdb_id, **{m: torch.from_numpy(a) for m, a in tiny_features(n, seed).items()}, **(extra or {})}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{imdb_id}.pkl"
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return path


def run_predict(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["predict", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def expected_scenes(prob: list[float], threshold: float, ends=None) -> list[dict]:
    """Scenes written out the slow way: cut after every transition with prob >= threshold."""
    scenes, first = [], 0
    cuts = [t for t, p in enumerate(prob) if p >= threshold] + [len(prob)]
    for k, last in enumerate(cuts):
        scenes.append({
            "index": k, "first_shot": first, "last_shot": last,
            "first_frame": None if ends is None else (0 if first == 0 else int(ends[first - 1]) + 1),
            "last_frame": None if ends is None else int(ends[last]),
            "boundary_prob": None if k == 0 else prob[first - 1],
        })
        first = last + 1
    return scenes


def direct_probs(model: LGSS, feats: dict[str, np.ndarray]) -> np.ndarray:
    """Probabilities of a movie with exactly SEQ_LEN transitions (one window), fed to the model by hand."""
    n = next(iter(feats.values())).shape[0]
    assert n - 1 == SEQ_LEN
    shots = np.clip(np.arange(SEQ_LEN)[:, None] + np.array([-1, 0, 1, 2]), 0, n - 1)  # [S, 4]
    x = {m: torch.from_numpy(feats[m][shots])[None] for m in model.cfg.feature_dims}  # [1, S, 4, D]
    with torch.no_grad():
        return torch.softmax(model(x), -1)[0, :, 1].numpy().astype(np.float64)


def test_json_probs_match_the_model_and_scenes_follow_the_threshold(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / "m.pt")
    movie = tiny_movie("tt0000001", SEQ_LEN + 1, seed=1)
    save_movie(movie, tmp_path / "movies")
    prob = direct_probs(model, movie.features)
    threshold = float(np.median(prob))
    rc, out, err = run_predict([str(tmp_path / "movies" / "tt0000001"), "--model", str(tmp_path / "m.pt"),
                                "--threshold", str(threshold)], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["threshold"] == threshold and doc["threshold_source"] == "--threshold"
    assert doc["model_kind"] == "lgss" and doc["modalities"] == list(FEATURE_DIMS)
    (m,) = doc["movies"]
    assert m["imdb_id"] == "tt0000001" and m["n_shots"] == SEQ_LEN + 1
    np.testing.assert_allclose(m["boundary_prob"], prob, atol=1.5e-6)  # written at 6 decimals
    assert m["scenes"] == expected_scenes(m["boundary_prob"], threshold, movie.shot_end_frame)
    assert 1 < m["n_scenes"] == len(m["scenes"]) < SEQ_LEN + 1
    # ground truth present: a small comparison with it
    gt = movie.boundary
    assert m["ground_truth"]["n_scenes"] == int(gt.sum()) + 1
    assert set(m["ground_truth"]) == {"n_scenes", "precision", "recall", "f1", "miou"}


def test_long_movie_scenes_and_frames_tile_the_movie(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "m.pt")
    movie = tiny_movie("tt0000002", 47, seed=2)
    save_movie(movie, tmp_path / "movies")
    rc, out, err = run_predict([str(tmp_path / "movies" / "tt0000002"), "--model", str(tmp_path / "m.pt"),
                                "--threshold", "0.5"], capsys)
    assert rc == 0, err
    (m,) = json.loads(out)["movies"]
    prob = m["boundary_prob"]
    assert len(prob) == 46 and all(0 <= p <= 1 for p in prob)
    threshold = float(np.quantile(prob, 0.7))  # rerun at a threshold that cuts about 30% of transitions
    rc, out, _ = run_predict([str(tmp_path / "movies" / "tt0000002"), "--model", str(tmp_path / "m.pt"),
                              "--threshold", str(threshold)], capsys)
    (m,) = json.loads(out)["movies"]
    assert m["boundary_prob"] == prob  # the threshold does not change the probabilities
    scenes = m["scenes"]
    assert scenes == expected_scenes(prob, threshold, movie.shot_end_frame)
    assert len(scenes) == sum(p >= threshold for p in prob) + 1 > 5
    assert scenes[-1]["last_frame"] == int(movie.shot_end_frame[-1])
    for a, b in zip(scenes, scenes[1:]):
        assert b["first_shot"] == a["last_shot"] + 1 and b["first_frame"] == a["last_frame"] + 1


def test_stored_threshold_is_the_default_and_the_flag_overrides_it(tmp_path, capsys):
    save_movie(tiny_movie("tt0000003", 40, seed=3, labels=False), tmp_path / "movies")
    path = str(tmp_path / "movies" / "tt0000003")
    tiny_checkpoint(tmp_path / "a.pt", threshold=0.0)
    rc, out, _ = run_predict([path, "--model", str(tmp_path / "a.pt")], capsys)
    prob = json.loads(out)["movies"][0]["boundary_prob"]
    stored = float(np.quantile(prob, 0.5))
    tiny_checkpoint(tmp_path / "b.pt", threshold=stored)  # same weights (same seed), another threshold
    rc, out, _ = run_predict([path, "--model", str(tmp_path / "b.pt")], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["threshold"] == stored and doc["threshold_source"] == "checkpoint (f1 on validation)"
    m = doc["movies"][0]
    assert m["n_scenes"] == sum(p >= stored for p in prob) + 1
    assert "ground_truth" not in m and m["scenes"][0]["first_frame"] is None  # no labels, no frames
    rc, out, _ = run_predict([path, "--model", str(tmp_path / "b.pt"), "--threshold", "1"], capsys)
    doc = json.loads(out)
    assert doc["threshold"] == 1.0 and doc["movies"][0]["n_scenes"] == 1  # no predicted boundary: one scene
    assert doc["movies"][0]["scenes"] == [{"index": 0, "first_shot": 0, "last_shot": 39, "first_frame": None,
                                           "last_frame": None, "boundary_prob": None}]
    rc, out, _ = run_predict([path, "--model", str(tmp_path / "b.pt"), "--threshold", "0"], capsys)
    assert json.loads(out)["movies"][0]["n_scenes"] == 40  # every transition a boundary: one scene per shot


def test_cpu_threads_limit_torch_and_blas_then_restore():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded
    torch_before = torch.get_num_threads()
    with threadpool_limits(3, user_api="blas"):  # a known setting to come back to (OMP_NUM_THREADS=1 in CI)
        assert blas() == {3}
        with predict.cpu_threads(1):
            assert torch.get_num_threads() == 1 and blas() == {1}  # numpy's BLAS too: the features' products
        assert torch.get_num_threads() == torch_before and blas() == {3}
        with predict.cpu_threads(0):  # 0: both as they were
            assert torch.get_num_threads() == torch_before and blas() == {3}


def test_csv_writes_scenes_and_probabilities_files(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "m.pt", threshold=0.5)
    for i, n in enumerate([30, 12]):
        save_movie(tiny_movie(f"tt000001{i}", n, seed=10 + i), tmp_path / "movies")
    base = [str(tmp_path / "movies"), "--model", str(tmp_path / "m.pt"), "--threshold", "0.5"]
    threads = torch.get_num_threads()
    rc, out, _ = run_predict([*base, "--threads", str(threads + 1)], capsys)
    assert torch.get_num_threads() == threads  # --threads holds only during the command
    doc = json.loads(out)
    out_csv = tmp_path / "res" / "scenes.csv"
    rc, out, err = run_predict([*base, "--format", "csv", "--out", str(out_csv)], capsys)
    assert rc == 0 and out == "" and "scenes_probs.csv" in err
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "res" / "scenes_probs.csv") as f:
        prob_rows = list(csv.DictReader(f))
    expect = [(m["imdb_id"], s) for m in doc["movies"] for s in m["scenes"]]
    assert len(rows) == len(expect)
    for row, (imdb_id, s) in zip(rows, expect):
        assert row["imdb_id"] == imdb_id and int(row["scene"]) == s["index"]
        assert (int(row["first_shot"]), int(row["last_shot"])) == (s["first_shot"], s["last_shot"])
        assert (int(row["first_frame"]), int(row["last_frame"])) == (s["first_frame"], s["last_frame"])
        assert row["boundary_prob"] == ("" if s["boundary_prob"] is None else str(s["boundary_prob"]))
    assert [(r["imdb_id"], int(r["transition"]), float(r["prob"])) for r in prob_rows] == [
        (m["imdb_id"], t, p) for m in doc["movies"] for t, p in enumerate(m["boundary_prob"])]
    assert all(int(r["boundary"]) == (float(r["prob"]) >= 0.5) for r in prob_rows)
    assert sum(int(r["boundary"]) for r in prob_rows) == len(rows) - 2  # two movies: one uncut scene each


def test_folder_of_pickles_and_converted_movies_via_the_safe_loader(tmp_path, capsys, monkeypatch):
    tiny_checkpoint(tmp_path / "m.pt", modalities=("place", "cast"))
    folder = tmp_path / "in"
    write_pickle(folder, "tt0000020", 14, seed=20)
    write_pickle(folder, "mymovie", 9, seed=21, extra={END_FRAME_KEY: torch.arange(9) * 10 + 9})
    movie = tiny_movie("tt0000022", 11, seed=22)  # converted folder without action/audio: not needed
    save_movie(Movie(movie.imdb_id, {m: movie.features[m] for m in ("place", "cast")}, movie.boundary,
                     movie.shot_end_frame), folder)
    (folder / "index.json").write_text("{}")  # other files are ignored
    calls = []
    import sceneseg.data.safeload

    real = sceneseg.data.safeload.read_movie_pickle
    monkeypatch.setattr(sceneseg.data.safeload, "read_movie_pickle", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    rc, out, err = run_predict([str(folder), "--model", str(tmp_path / "m.pt")], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert [m["imdb_id"] for m in doc["movies"]] == ["mymovie", "tt0000020", "tt0000022"]
    assert [m["n_shots"] for m in doc["movies"]] == [9, 14, 11]
    assert sorted(Path(c).name for c in calls) == ["mymovie.pkl", "tt0000020.pkl"]
    assert doc["movies"][0]["scenes"][-1]["last_frame"] == 89  # frames from the pickle's shot_end_frame
    assert "tt0000020: 14 shots ->" in err
    rc, out, err = run_predict([str(folder / "tt0000020.pkl"), "--model", str(tmp_path / "m.pt")], capsys)
    assert rc == 0 and json.loads(out)["movies"][0]["boundary_prob"] == doc["movies"][1]["boundary_prob"]


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "m.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "tt0000030.pkl").write_bytes(pickle.dumps({"imdb_id": Evil()}))
    rc, out, err = run_predict([str(tmp_path / "tt0000030.pkl"), "--model", str(tmp_path / "m.pt")], capsys)
    assert rc == 1 and "pwned" not in out and "refused to load global 'builtins.print'" in err


def test_one_shot_movie_is_one_scene_without_a_model_call(tmp_path, capsys, monkeypatch):
    tiny_checkpoint(tmp_path / "m.pt")
    save_movie(Movie("tt0000040", tiny_features(1, 40), None, np.array([99])), tmp_path / "movies")
    import sceneseg.models.lgss.inference

    monkeypatch.setattr(sceneseg.models.lgss.inference, "predict_windows", lambda *a, **k: pytest.fail("model called"))
    rc, out, err = run_predict([str(tmp_path / "movies"), "--model", str(tmp_path / "m.pt"), "--plot",
                                str(tmp_path / "plots")], capsys)
    assert rc == 0, err
    (m,) = json.loads(out)["movies"]
    assert m["boundary_prob"] == [] and m["scenes"] == [
        {"index": 0, "first_shot": 0, "last_shot": 0, "first_frame": 0, "last_frame": 99, "boundary_prob": None}]


def test_plot_draws_one_timeline_per_movie(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "m.pt")
    save_movie(tiny_movie("tt0000050", 25, seed=50), tmp_path / "movies")
    save_movie(tiny_movie("tt0000051", 20, seed=51, labels=False), tmp_path / "movies")
    rc, _, err = run_predict([str(tmp_path / "movies"), "--model", str(tmp_path / "m.pt"), "--plot",
                              str(tmp_path / "plots"), "--out", str(tmp_path / "p.json")], capsys)
    assert rc == 0, err
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["timeline_tt0000050.png", "timeline_tt0000051.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert len(json.loads((tmp_path / "p.json").read_text())["movies"]) == 2


@pytest.mark.parametrize("case, message", [
    ("missing_modality", "movie tt0000060 ({movie}): the model needs the modalities ['place', 'cast', 'action', "
                         "'audio']; missing ['action', 'audio'], found only ['cast', 'place']"),
    ("wrong_dim", "movie tt0000060 ({movie}): 'cast' features expected shape [N, 512] (the model's dimension), found [12, 300]"),
    ("no_movies", "{empty}: no movies found"),
    ("bad_checkpoint", "{bad}: not a sceneseg checkpoint"),
    ("missing_checkpoint", "{nothing}: expected a sceneseg checkpoint file, found nothing"),
    ("bad_threshold", "--threshold: expected a number in [0, 1], found 1.5"),
    ("csv_without_out", "--format csv writes two files"),
    ("bad_threads", "--threads: expected 0 (torch's default) or a positive number, found -1"),
    ("missing_input", "{nothing}: expected a MovieScenes pickle (.pkl), a converted movie folder or a folder of them, found nothing there"),
])
def test_errors_are_one_clear_line_and_exit_1(tmp_path, capsys, case, message):
    tiny_checkpoint(tmp_path / "m.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "empty").mkdir()
    feats = tiny_features(12, 60)
    if case == "missing_modality":
        del feats["audio"], feats["action"]
    if case == "wrong_dim":
        feats["cast"] = feats["cast"][:, :300]
    save_movie(Movie("tt0000060", feats), tmp_path / "movies")
    paths = {"movie": tmp_path / "movies" / "tt0000060", "empty": tmp_path / "empty", "bad": tmp_path / "bad.pt",
             "nothing": tmp_path / "nothing"}
    argv = {
        "no_movies": [str(paths["empty"]), "--model", str(tmp_path / "m.pt")],
        "bad_checkpoint": [str(paths["movie"]), "--model", str(paths["bad"])],
        "missing_checkpoint": [str(paths["movie"]), "--model", str(paths["nothing"])],
        "bad_threshold": [str(paths["movie"]), "--model", str(tmp_path / "m.pt"), "--threshold", "1.5"],
        "csv_without_out": [str(paths["movie"]), "--model", str(tmp_path / "m.pt"), "--format", "csv"],
        "bad_threads": [str(paths["movie"]), "--model", str(tmp_path / "m.pt"), "--threads", "-1"],
        "missing_input": [str(paths["nothing"]), "--model", str(tmp_path / "m.pt")],
    }.get(case, [str(tmp_path / "movies"), "--model", str(tmp_path / "m.pt")])
    rc, out, err = run_predict(argv, capsys)
    assert rc == 1 and out == ""
    assert err.startswith("error: " + message.format(**paths)), err
    assert len(err.strip().splitlines()) == 1
    assert "weights_only=False" not in err  # never advise loading a checkpoint unsafely


def test_scenes_from_probs_edges():
    assert predict.scenes_from_probs(np.zeros(0), 0.5) == [predict.Scene(0, 0, 0, None, None, None)]
    s = predict.scenes_from_probs(np.array([0.5, 0.2, 0.9]), 0.5, np.array([3, 7, 8, 20]))
    assert [(x.first_shot, x.last_shot, x.first_frame, x.last_frame, x.boundary_prob) for x in s] == [
        (0, 0, 0, 3, None), (1, 2, 4, 8, 0.5), (3, 3, 9, 20, 0.9)]


def test_a_movie_twice_in_a_folder_is_refused_before_predicting_it_again(tmp_path, capsys, monkeypatch):
    import sceneseg.evaluation.plots
    drawn = []
    monkeypatch.setattr(sceneseg.evaluation.plots, "plot_timeline", lambda imdb_id, *a, **k: drawn.append(imdb_id))
    tiny_checkpoint(tmp_path / "m.pt")
    folder = tmp_path / "movies"
    save_movie(tiny_movie("tt0000001", 12, 0), folder)  # converted folder tt0000001/
    write_pickle(folder, "tt0000001", 9, 1)  # the same id again, as a pickle
    rc, out, err = run_predict([str(folder), "--model", str(tmp_path / "m.pt"), "--plot", str(tmp_path / "plots")], capsys)
    assert rc == 1 and out == ""
    assert "movie tt0000001 was already read from" in err
    assert drawn == ["tt0000001"]  # the second copy was neither predicted nor drawn over the first


def test_several_inputs_one_line_each_and_the_overall_scores(tmp_path, capsys):
    """Files and folders together; one stderr line per movie; AP / mAP / Miou of the labelled ones."""
    from sklearn.metrics import average_precision_score

    tiny_checkpoint(tmp_path / "m.pt", threshold=0.5)
    a, b = tiny_movie("tt0000071", 14, seed=71), tiny_movie("tt0000072", 11, seed=72)
    save_movie(a, tmp_path / "set1")
    save_movie(b, tmp_path / "set2")
    user = write_pickle(tmp_path / "own", "tt0000073", 9, seed=73)  # no ground truth
    rc, out, err = run_predict([str(tmp_path / "set1"), str(tmp_path / "set2" / "tt0000072"), str(user),
                                "--model", str(tmp_path / "m.pt")], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert [m["imdb_id"] for m in doc["movies"]] == ["tt0000071", "tt0000072", "tt0000073"]
    lines = err.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines[:3]] == ["tt0000071", "tt0000072", "tt0000073"]
    assert f"-> {doc['movies'][0]['n_scenes']} scenes ({int(a.boundary.sum()) + 1} true; F1 " in lines[0]
    assert "true" not in lines[2]  # the user's movie has no ground truth
    # overall: pooled AP, mean per-movie AP and Miou of the two labelled movies, by hand
    probs = {m["imdb_id"]: np.array(m["boundary_prob"]) for m in doc["movies"]}
    gt = {"tt0000071": a.boundary, "tt0000072": b.boundary}
    pooled = average_precision_score(np.concatenate(list(gt.values())), np.concatenate([probs[k] for k in gt]))
    per_movie = [average_precision_score(g, probs[k]) for k, g in gt.items()]
    overall = doc["ground_truth"]
    assert overall["n_movies"] == 2
    assert overall["AP"] == pytest.approx(pooled, abs=1e-4) and overall["mAP"] == pytest.approx(np.mean(per_movie), abs=1e-4)
    assert overall["Miou"] == pytest.approx(np.mean([m["ground_truth"]["miou"] for m in doc["movies"][:2]]), abs=2e-4)
    assert lines[3] == (f"predict: 2 movies with ground truth: AP {overall['AP']:.3f}, mAP {overall['mAP']:.3f}, "
                        f"Miou {overall['Miou']:.3f}, F1 {overall['F1']:.3f} (threshold 0.5)")
    # the same movie through two inputs is refused
    rc, out, err = run_predict([str(tmp_path / "set1"), str(tmp_path / "set1" / "tt0000071"), "--model",
                                str(tmp_path / "m.pt")], capsys)
    assert rc == 1 and "movie tt0000071 was already read from" in err


def test_a_pickle_of_any_file_name_is_read_under_the_id_inside(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "m.pt")
    path = write_pickle(tmp_path, "tt0000081", 10, seed=81)
    mine = path.rename(tmp_path / "my movie.pkl")
    rc, out, err = run_predict([str(mine), "--model", str(tmp_path / "m.pt")], capsys)
    assert rc == 0, err
    assert json.loads(out)["movies"][0]["imdb_id"] == "tt0000081"
    said = [line for line in err.splitlines() if "holds movie" in line]
    assert said == [f"predict: {mine} holds movie tt0000081 (the id inside the pickle names it, not the file name)"]
    assert "overall" not in err and "ground truth:" not in err  # no labels: no overall scores
