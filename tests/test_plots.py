"""Report pictures: the PNGs appear with sensible sizes, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sceneseg.evaluation import plots


def png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def ink(path) -> float:
    """Share of pixels that are not white."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    return float((a < 250).mean())


def fake_movie(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = rng.random(n - 1) < 0.08
    prob = np.clip(rng.beta(1, 8, n - 1) + gt * 0.5, 0, 1)
    ends = np.cumsum(rng.integers(24, 200, n))
    return gt, prob, ends


def test_plot_losses(tmp_path):
    out = tmp_path / "sub" / "loss.png"
    plots.plot_losses([1, 2, 3], [0.7, 0.5, 0.4], [0.6, 0.55, 0.5], out, test=0.45)
    w, h = png_size(out)
    assert 600 < w < 1000 and 350 < h < 700 and ink(out) > 0.02


def test_plot_pr_curves(tmp_path):
    r = np.linspace(1, 0, 50)
    curves = {"model": (r, 1 - 0.5 * r), "shipped": (r, 1 - 0.7 * r)}
    plots.plot_pr_curves(curves, tmp_path / "pr.png", ap={"model": 0.75})
    w, h = png_size(tmp_path / "pr.png")
    assert 500 < w < 900 and 500 < h < 900


def test_step_area_is_sklearn_ap():
    from sklearn.metrics import average_precision_score, precision_recall_curve

    rng = np.random.default_rng(1)
    y, s = rng.random(300) < 0.2, rng.random(300)
    p, r, _ = precision_recall_curve(y, s)
    assert plots._step_area(r, p) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_plot_per_movie_width_grows_with_movies(tmp_path):
    few = {s: {f"tt{i}": 0.1 * i for i in range(7)} for s in ("model", "shipped", "chance")}
    many = {s: {f"tt{i:07d}": 0.5 for i in range(64)} for s in ("model", "shipped")}
    plots.plot_per_movie(few, "Miou", tmp_path / "few.png")
    plots.plot_per_movie(many, "AP", tmp_path / "many.png")
    (w1, _), (w2, _) = png_size(tmp_path / "few.png"), png_size(tmp_path / "many.png")
    assert 700 < w1 < 1200 and w1 < w2 <= 18 * 120 + 100


def test_plot_timeline_rows_for_a_long_movie(tmp_path):
    gt, prob, ends = fake_movie(3000)
    plots.plot_timeline("tt0000001", gt, prob, 0.5, tmp_path / "long.png", shot_end_frame=ends)
    gt, prob, _ = fake_movie(500)
    plots.plot_timeline("tt0000002", gt, prob, 0.3, tmp_path / "short.png")
    (w1, h1), (w2, h2) = png_size(tmp_path / "long.png"), png_size(tmp_path / "short.png")
    assert 1600 < w1 < 2000 and 1600 < w2 < 2000
    assert h1 > 4 * 250 and h2 < 500  # 5 rows of 600 shots against 1 row


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="equally long"):
        plots.plot_losses([1, 2], [0.5], [0.5, 0.4], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one curve"):
        plots.plot_pr_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="model.*equally long"):
        plots.plot_pr_curves({"model": (np.ones(3), np.ones(4))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="shipped.*missing"):
        plots.plot_per_movie({"model": {"a": 1.0, "b": 0.5}, "shipped": {"a": 1.0}}, "AP", tmp_path / "x.png")
    gt, prob, ends = fake_movie(50)
    with pytest.raises(ValueError, match="tt9.*probabilities"):
        plots.plot_timeline("tt9", gt, prob[:-1], 0.5, tmp_path / "x.png")
    with pytest.raises(ValueError, match="tt9.*threshold"):
        plots.plot_timeline("tt9", gt, prob, 1.5, tmp_path / "x.png")
    with pytest.raises(ValueError, match="tt9.*shot_end_frame"):
        plots.plot_timeline("tt9", gt, prob, 0.5, tmp_path / "x.png", shot_end_frame=ends[:-1])
    assert not (tmp_path / "x.png").exists()


def captured_figure(monkeypatch):
    """The Figure a plot function saves (plots._save replaced by a recorder)."""
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figs.append(fig))
    return figs


def test_pr_curves_stay_off_the_frame_and_the_iso_f1_labels(monkeypatch, tmp_path):
    figs = captured_figure(monkeypatch)
    r = np.linspace(1, 0, 50)
    plots.plot_pr_curves({"model": (r, np.where(r < 0.3, 1.0, 1 - 0.5 * r))}, tmp_path / "pr.png")
    ax = figs[0].axes[0]
    lo, hi = ax.get_xlim()
    assert lo < 0 and hi > 1  # recall 0 and 1 inside the frame
    lo, hi = ax.get_ylim()
    assert lo < 0 and hi > 1  # precision 1 below the top edge
    labels = [t for t in ax.texts if t.get_text().startswith("F1=")]
    assert [t.get_text() for t in labels] == ["F1=0.2", "F1=0.4", "F1=0.6", "F1=0.8"]
    for t in labels:  # anchored on the right edge (axes x = 1), written outward: no curve runs there
        assert t.xy[0] == 1 and t.xycoords == ("axes fraction", "data") and t.get_position()[0] > 0


def test_timeline_names_its_probability_axis(monkeypatch, tmp_path):
    figs = captured_figure(monkeypatch)
    gt, prob, ends = fake_movie(1300)
    plots.plot_timeline("tt0000001", gt, prob, 0.4, tmp_path / "t.png", shot_end_frame=ends)
    rows = [ax for ax in figs[0].axes if ax.get_ylabel().startswith("shots")]
    prob_axes = [c for ax in rows for c in ax.child_axes if "probability" in c.get_ylabel()]  # one per row
    assert len(rows) == 3 and len(prob_axes) == 3
    assert [list(ax.get_yticks()) for ax in prob_axes] == [[0, 0.5, 1]] * 3
