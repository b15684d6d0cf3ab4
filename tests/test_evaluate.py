"""evaluate.score_systems, boundary_rate and pr_points by value: every system is scored on the same
movies by the same code, the chance rate is the one given (the training movies'), the tuned rows use
their thresholds, the Recall@Ns key follows the window, shipped needs a baseline on every movie
(else its row says it is absent)."""

from __future__ import annotations

import eluvio_reference
import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from sceneseg.data.movies import Movie
from sceneseg.evaluation.report import boundary_rate, pr_points, score_systems

FPS, WINDOW_S, SEED = 2.0, 5.0, 7
SCALARS = ("AP", "mAP", "Miou", "Precision", "Recall", "F1", "Recall@5s")


def movie(imdb_id: str, n_shots: int, seed: int, rate: float, baseline: bool = True) -> Movie:
    """Labels at ``rate``; shots of 1-30 frames; a noisy shipped prediction."""
    rng = np.random.default_rng(seed)
    boundary = rng.random(n_shots - 1) < rate
    ends = np.cumsum(rng.integers(1, 30, size=n_shots)).astype(np.int64)
    base = np.clip(0.5 * boundary + 0.6 * rng.random(n_shots - 1), 0, 1).astype(np.float32) if baseline else None
    return Movie(imdb_id, {"place": np.zeros((n_shots, 2), np.float32)}, boundary, ends, base)


def low_scores(movies: list[Movie], seed: int, high: float) -> dict[str, np.ndarray]:
    """Informative scores that all lie below 0.5: boundaries in [high - 0.1, high), others in [0, 0.2)."""
    rng = np.random.default_rng(seed)
    out = {}
    for m in movies:
        b = np.asarray(m.boundary)
        noise = rng.random(b.size)
        out[m.imdb_id] = np.where(b & (noise < 0.8), high - 0.1 * noise, 0.2 * noise)
    return out


@pytest.fixture(scope="module")
def movies() -> list[Movie]:
    # test labels at ~50% boundaries, far from the 5% training rate passed in
    return [movie("tt01", 90, 1, 0.5), movie("tt02", 45, 2, 0.5), movie("tt03", 130, 3, 0.5)]


def reference(movies, prob, threshold, fps=FPS, window_s=WINDOW_S) -> dict:
    """The scores by the independent reference (plain loops over transitions and scenes)."""
    gt = {m.imdb_id: np.asarray(m.boundary, bool) for m in movies}
    ends = {m.imdb_id: np.asarray(m.shot_end_frame) for m in movies}
    return eluvio_reference.evaluate(gt, prob, ends, threshold=threshold, fps=fps, window_s=window_s)


def approx(d: dict):
    return pytest.approx(d, abs=1e-12)


def test_every_system_is_scored_on_the_same_movies_with_its_threshold(movies):
    ids = {m.imdb_id for m in movies}
    model_prob = low_scores(movies, 0, high=0.45)
    stacked_prob = low_scores(movies, 1, high=0.3)
    summary, per_movie, systems = score_systems(movies, model_prob, 0.3, FPS, WINDOW_S, SEED, 0.05,
                                                references={"stacked": (stacked_prob, 0.15)})
    assert set(summary) == set(per_movie) == {"model", "model_tuned", "stacked", "shipped", "chance"}
    assert set(systems) == {"model", "stacked", "shipped", "chance"}
    for name, pm in per_movie.items():
        assert set(pm) == ({"Miou"} if name == "model_tuned" else {"AP", "Miou"})
        assert all(set(d) == ids for d in pm.values()), name

    # model at 0.5, model_tuned at its threshold, stacked at its own: the independent reference's scores there
    shipped = {m.imdb_id: np.asarray(m.baseline, np.float64) for m in movies}
    for name, prob, thr, keys in (("model", model_prob, 0.5, SCALARS), ("model_tuned", model_prob, 0.3, SCALARS[2:]),
                                  ("stacked", stacked_prob, 0.15, SCALARS), ("shipped", shipped, 0.5, SCALARS)):
        ref = reference(movies, prob, thr)
        assert {k: v for k, v in summary[name].items() if k != "threshold"} == approx({k: ref[k] for k in keys}), name
        assert per_movie[name]["Miou"] == approx(ref["Miou_dict"])
        if name != "model_tuned":
            assert per_movie[name]["AP"] == approx(ref["AP_dict"])
        np.testing.assert_array_equal(np.concatenate(list(systems.get(name, prob).values())),
                                      np.concatenate(list(prob.values())))
    assert all(p.dtype == np.float64 for p in systems["shipped"].values())  # float32 baselines, read as float64
    assert summary["model_tuned"]["threshold"] == 0.3 and summary["stacked"]["threshold"] == 0.15
    assert "threshold" not in summary["model"] and "threshold" not in summary["shipped"]
    # the crafted scores make the thresholds matter: nothing reaches 0.5
    assert summary["model"]["F1"] == 0.0 and summary["model_tuned"]["F1"] > 0.5
    assert summary["stacked"]["F1"] > 0.5 and reference(movies, stacked_prob, 0.5)["F1"] == 0.0
    assert summary["model_tuned"]["Miou"] != summary["model"]["Miou"]
    # fps and the window reach the recall: at 24 fps and 3 s it would differ
    other = reference(movies, model_prob, 0.3, fps=24.0, window_s=3.0)["Recall@3s"]
    assert summary["model_tuned"]["Recall@5s"] != other


def test_chance_fires_at_the_given_rate_not_the_test_labels(movies):
    gt = {m.imdb_id: np.asarray(m.boundary, bool) for m in movies}
    test_rate = np.mean(np.concatenate(list(gt.values())))
    assert test_rate > 0.4
    summary, per_movie, systems = score_systems(movies, low_scores(movies, 0, 0.45), 0.3, FPS, WINDOW_S, SEED, 0.05)
    chance = np.concatenate([systems["chance"][i] for i in gt])
    assert 0.02 < np.mean(chance >= 0.5) < 0.09  # 5% of 264 transitions, far from the labels' 50%
    # the labels' positions do not move it: flipped labels, the same predictions
    flipped = [Movie(m.imdb_id, m.features, ~np.asarray(m.boundary), m.shot_end_frame, m.baseline) for m in movies]
    _, _, same = score_systems(flipped, low_scores(movies, 0, 0.45), 0.3, FPS, WINDOW_S, SEED, 0.05)
    for i in gt:
        np.testing.assert_array_equal(same["chance"][i], systems["chance"][i])
    ref = reference(movies, systems["chance"], 0.5)
    assert summary["chance"] == approx({k: ref[k] for k in SCALARS})
    assert "threshold" not in summary["chance"]
    # another seed draws other boundaries
    _, _, again = score_systems(movies, low_scores(movies, 0, 0.45), 0.3, FPS, WINDOW_S, SEED + 1, 0.05)
    assert not np.array_equal(np.concatenate(list(again["chance"].values())), chance)


def test_integer_labels_are_read_as_booleans(movies):
    as_int = [Movie(m.imdb_id, m.features, np.asarray(m.boundary).astype(np.int8), m.shot_end_frame, m.baseline)
              for m in movies]
    prob = low_scores(movies, 0, 0.45)
    assert score_systems(as_int, prob, 0.3, FPS, WINDOW_S, SEED, 0.05)[0] == \
        score_systems(movies, prob, 0.3, FPS, WINDOW_S, SEED, 0.05)[0]


def test_the_recall_key_follows_the_window_in_every_row(movies):
    summary, _, _ = score_systems(movies, low_scores(movies, 0, 0.45), 0.3, FPS, 2.5, SEED, 0.1,
                                  references={"stacked": (low_scores(movies, 1, 0.3), 0.2)})
    for name, row in summary.items():
        assert "Recall@2.5s" in row and "Recall@3s" not in row, name
    assert summary["model"]["Recall@2.5s"] == pytest.approx(
        reference(movies, low_scores(movies, 0, 0.45), 0.5, window_s=2.5)["Recall@2.5s"], abs=1e-12)


def test_shipped_needs_a_baseline_on_every_movie_and_its_row_says_when_it_is_absent(movies):
    bare = [*movies[:2], Movie(movies[2].imdb_id, movies[2].features, movies[2].boundary, movies[2].shot_end_frame)]
    summary, per_movie, systems = score_systems(bare, low_scores(bare, 0, 0.45), 0.3, FPS, WINDOW_S, SEED, 0.05)
    assert summary["shipped"] == {"absent": "no shipped prediction in 1 of the 3 test movies (tt03)"}
    assert "shipped" not in per_movie and "shipped" not in systems
    assert set(summary) == {"model", "model_tuned", "chance", "shipped"}  # and no stacked without one given
    none = [Movie(m.imdb_id, m.features, m.boundary, m.shot_end_frame) for m in movies]
    summary, _, _ = score_systems(none, low_scores(none, 0, 0.45), 0.3, FPS, WINDOW_S, SEED, 0.05)
    assert summary["shipped"] == {"absent": "no shipped prediction in any of the 3 test movies"}


def test_boundary_rate_pools_the_movies():
    a, b = movie("tt1", 11, 0, 0.5), movie("tt2", 101, 1, 0.05)
    pooled = (np.sum(a.boundary) + np.sum(b.boundary)) / 110
    assert boundary_rate([a, b]) == pytest.approx(pooled, abs=1e-15)
    assert abs(pooled - (np.mean(a.boundary) + np.mean(b.boundary)) / 2) > 0.1  # not the mean of the rates
    assert isinstance(boundary_rate([a]), float)
    unlabelled = Movie("tt3", a.features, None, a.shot_end_frame)
    with pytest.raises(ValueError, match="^movie tt3: expected ground-truth boundaries, found none$"):
        boundary_rate([a, unlabelled])


def test_pr_points_thinning_keeps_the_ends():
    rng = np.random.default_rng(0)
    gt = {"a": rng.random(700) < 0.2, "b": rng.random(300) < 0.2}
    prob = {k: np.clip(0.3 * g + rng.random(g.size), 0, 1) for k, g in gt.items()}
    precision, recall, _ = precision_recall_curve(np.concatenate([gt["a"], gt["b"]]), np.concatenate([prob["a"], prob["b"]]))
    assert len(recall) > 900
    pts = pr_points(gt, prob, max_points=50)
    assert len(pts) == 50
    assert pts[0] == {"recall": float(recall[0]), "precision": float(precision[0])}
    assert pts[-1] == {"recall": 0.0, "precision": 1.0} == {"recall": float(recall[-1]), "precision": float(precision[-1])}
    keep = np.linspace(0, len(recall) - 1, 50).round().astype(int)
    assert pts == [{"recall": float(recall[i]), "precision": float(precision[i])} for i in keep]
    assert all(type(v) is float for p in pts for v in p.values())
    # fewer points than asked: all of them
    assert pr_points(gt, prob, max_points=5000) == [{"recall": float(r), "precision": float(p)}
                                                    for r, p in zip(recall, precision)]
    # the default keeps at most 400
    assert len(pr_points(gt, prob)) == 400


def test_draw_hands_each_picture_its_systems_data(tmp_path, monkeypatch):
    from sceneseg.evaluation import report as evaluate_mod
    from sceneseg.evaluation.report import draw

    calls = []
    monkeypatch.setattr(evaluate_mod.plots, "plot_pr_curves", lambda curves, out, ap=None: calls.append(("pr", curves, out, ap)))
    monkeypatch.setattr(evaluate_mod.plots, "plot_per_movie", lambda values, metric, out: calls.append(("bars", values, metric, out)))
    monkeypatch.setattr(evaluate_mod.plots, "plot_timeline",
                        lambda imdb_id, gt, prob, thr, out, shot_end_frame=None, fps=None:
                        calls.append(("timeline", imdb_id, gt, prob, thr, out, shot_end_frame, fps)))
    # long movies (more than 2,000 points on a PR curve), labels as 0/1 integers
    movies = [movie("tt01", 1200, 1, 0.3), movie("tt02", 1000, 2, 0.3), movie("tt03", 50, 3, 0.3)]
    movies = [Movie(m.imdb_id, m.features, m.boundary.astype(np.int8), m.shot_end_frame, m.baseline) for m in movies]
    model_prob = {k: np.clip(p + 0.01 * np.arange(p.size) / p.size, 0, 1) for k, p in low_scores(movies, 0, 0.45).items()}
    summary, per_movie, systems = score_systems(movies, model_prob, 0.3, FPS, WINDOW_S, SEED, 0.05,
                                                references={"stacked": (low_scores(movies, 1, 0.3), 0.15)})
    out = tmp_path / "new" / "eval"
    draw(movies, systems, summary, per_movie, 0.3, out, 2, FPS)
    assert out.is_dir()
    draw(movies, systems, summary, per_movie, 0.3, out, 2, FPS)  # again into the same folder (a rerun)
    calls = calls[:len(calls) // 2]
    (pr, curves, pr_out, ap), *rest = calls
    assert pr == "pr" and pr_out == out / "pr_curve.png" and list(curves) == ["model", "stacked", "shipped"]
    gt = {m.imdb_id: np.asarray(m.boundary, bool) for m in movies}
    assert len(curves["model"][0]) == 2000  # thinned to 2,000 points
    for name, (recall, precision) in curves.items():  # scikit-learn's pooled curve at 2,000 evenly spaced rows
        full_p, full_r, _ = precision_recall_curve(np.concatenate([gt[m.imdb_id] for m in movies]),
                                                   np.concatenate([systems[name][m.imdb_id] for m in movies]))
        rows = np.linspace(0, len(full_r) - 1, min(2000, len(full_r))).round().astype(int)
        np.testing.assert_array_equal(recall, full_r[rows])
        np.testing.assert_array_equal(precision, full_p[rows])
    assert ap == {name: summary[name]["AP"] for name in curves}
    bars = [c for c in rest if c[0] == "bars"]
    assert [(b[2], b[3]) for b in bars] == [("AP", out / "per_movie_ap.png"), ("Miou", out / "per_movie_miou.png")]
    assert bars[0][1] == {name: pm["AP"] for name, pm in per_movie.items() if name != "model_tuned"}
    assert bars[1][1] == {name: pm["Miou"] for name, pm in per_movie.items()}
    timelines = [c for c in rest if c[0] == "timeline"]
    assert [t[1] for t in timelines] == ["tt01", "tt02"]  # the first n_timelines movies
    for (_, imdb_id, g, prob, thr, t_out, ends, fps), m in zip(timelines, movies):
        assert g.dtype == np.bool_
        np.testing.assert_array_equal(g, m.boundary)
        assert prob is model_prob[imdb_id] and thr == 0.3 and fps == FPS
        assert t_out == out / f"timeline_{imdb_id}.png"
        np.testing.assert_array_equal(ends, m.shot_end_frame)


def test_headline_keeps_the_few_numbers_dvc_shows():
    from sceneseg.evaluation.report import headline

    full = {"model": {"AP": 0.8, "mAP": 0.81, "Miou": 0.7, "Precision": 0.6, "Recall": 0.5, "F1": 0.55, "Recall@3s": 0.6},
            "boosted": {"AP": 0.7, "mAP": 0.71, "Miou": 0.65, "F1": 0.5, "threshold": 0.2},
            "chance": {"AP": 0.1, "mAP": 0.1, "Miou": 0.3, "F1": 0.05},
            "model_tuned": {"threshold": 0.4, "Miou": 0.75, "Precision": 0.7, "Recall": 0.6, "F1": 0.64}}
    assert headline(full) == {"AP": 0.8, "mAP": 0.81, "Miou": 0.75, "F1": 0.64,
                              "boosted": {"AP": 0.7, "Miou": 0.65}, "chance": {"AP": 0.1, "Miou": 0.3}}
