"""From a video file to shots, features, movies and scenes, on small videos generated here with PyAV.

Each generated video knows its true shots (last frames) and scenes (start times); the tests compare
what the code finds with those, computed independently of it.
"""

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from test_resume import run_stage

from sceneseg.cli import main
from sceneseg.config import VIDEO_DEFAULTS
from sceneseg.data.movies import load_movie, read_index
from sceneseg.video.annotations import align, read_scene_starts
from sceneseg.video.movie import detect_and_describe, video_shots
from sceneseg.video.synthetic import write_video

ROOT = Path(__file__).resolve().parents[1]
FPS = 12


def centred_cosines(x: np.ndarray) -> np.ndarray:
    """[N, N] cosine similarity of the rows after removing their mean (as the models read features)."""
    u = x - x.mean(0)
    u = u / (np.linalg.norm(u, axis=1, keepdims=True) + 1e-12)
    return u @ u.T


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list:
    d = tmp_path_factory.mktemp("videos")
    return [write_video(d / f"clip{i}.mp4", seed=i, n_scenes=5, shots_per_scene=(1, 4)) for i in range(3)]


def test_detected_shot_ends_and_times_equal_the_generated_ones(videos):
    for g in videos:
        shots = detect_and_describe(g.path, VIDEO_DEFAULTS)
        assert shots.shot_end_frame.tolist() == g.shot_end_frame.tolist()
        assert shots.fps == FPS and shots.n_frames == g.shot_end_frame[-1] + 1
        # a shot ends when the next one starts: its first frame's timestamp (frame / fps at a constant rate)
        assert np.allclose(shots.shot_end_time, (g.shot_end_frame + 1) / FPS)
        assert {k: v.shape for k, v in shots.features.items()} == {
            "place": (len(g.shot_end_frame), 2048), "action": (len(g.shot_end_frame), 512),
            "audio": (len(g.shot_end_frame), 512)}


def test_variable_frame_rate_times_come_from_the_timestamps(tmp_path):
    g = write_video(tmp_path / "vfr.mp4", seed=3, vfr=True)
    gaps = np.diff(g.frame_time_s)
    assert np.allclose(gaps[::2], 1 / FPS, atol=1e-3) and np.allclose(gaps[1::2], 1.5 / FPS, atol=1e-3)
    shots = detect_and_describe(g.path, VIDEO_DEFAULTS)
    assert shots.shot_end_frame.tolist() == g.shot_end_frame.tolist()
    # each shot ends when the next one's first frame is shown (not frame / fps)
    assert np.allclose(shots.shot_end_time[:-1], g.frame_time_s[g.shot_end_frame[:-1] + 1], atol=1e-3)
    assert not np.allclose(shots.shot_end_time[:-1], (g.shot_end_frame[:-1] + 1) / FPS, atol=0.05)


def test_the_adaptive_detector_at_its_default_threshold_finds_the_same_cuts(videos):
    # it reports a cut 2 frames late, once it has seen the frames after it (window_width 2)
    shots = detect_and_describe(videos[0].path, replace(VIDEO_DEFAULTS, detector="adaptive", threshold=None))
    assert shots.shot_end_frame.tolist() == videos[0].shot_end_frame.tolist()
    # each shot's first frame was still described (from the frames kept), as with the content detector
    assert np.array_equal(shots.features["place"], detect_and_describe(videos[0].path, VIDEO_DEFAULTS).features["place"])


def test_a_libx264_video_gives_the_same_shots(tmp_path):
    g = write_video(tmp_path / "h264.mp4", seed=7, codec="libx264", size=(128, 72))
    assert detect_and_describe(g.path, VIDEO_DEFAULTS).shot_end_frame.tolist() == g.shot_end_frame.tolist()


def test_features_make_shots_of_one_scene_more_alike_than_shots_of_different_scenes(videos):
    for g in videos:
        feats = detect_and_describe(g.path, VIDEO_DEFAULTS).features
        same = g.shot_scene[:, None] == g.shot_scene[None, :]
        off = ~np.eye(len(same), dtype=bool)
        for mod, margin in (("place", 0.2), ("audio", 0.5), ("action", 0.0)):
            c = centred_cosines(feats[mod])
            assert c[same & off].mean() > c[~same].mean() + margin, mod


def test_alignment_of_scene_starts_to_cuts():
    cuts = np.array([1.0, 2.5, 4.0, 6.0])  # start times of shots 1..4
    boundary, problems = align(np.array([0.0, 2.4, 3.0, 5.9, 6.1]), cuts, tolerance_s=0.2)
    # 0.0 opens the first scene; 2.4 -> cut 1; 3.0 is 0.5 s from any cut; 5.9 -> cut 3; 6.1 -> cut 3 again
    assert boundary.tolist() == [False, True, False, True]
    assert len(problems) == 2 and problems[0].startswith("scene start 3.000 s: nearest cut at 2.500 s (-0.500 s)")
    assert "already starts a scene" in problems[1]


@pytest.mark.parametrize("text,message", [
    ("start\n0\n", "expected the header line 'start_s', found 'start'"),
    ("start_s\n0\nabc\n", "line 3: expected a start time in seconds, found 'abc'"),
    ("start_s\n0\n5\n4\n", "line 4: expected increasing start times, found 4 after 5"),
    ("start_s\n0\n12.5\n", "line 3: scene start 12.5 s is past the end of the video (10.000 s)"),
])
def test_bad_annotations_name_the_file_and_line(tmp_path, text, message):
    f = tmp_path / "a.scenes.csv"
    f.write_text(text)
    with pytest.raises(ValueError, match=f"^{f}.*{message.replace('(', '[(]').replace(')', '[)]')}$"):
        read_scene_starts(f, 10.0)


def test_features_are_cached_by_file_content_and_settings(videos, tmp_path):
    g = videos[0]
    first = video_shots(g.path, VIDEO_DEFAULTS, tmp_path)
    entries = list((tmp_path / "video").iterdir())
    assert len(entries) == 1 and not [p for p in tmp_path.rglob(".*")]  # one entry, no temp leftovers
    for f in entries[0].glob("*.npy"):  # the entry is what the cache returns: poison it to see it read
        if f.name == "audio.npy":
            np.save(f, np.full_like(np.load(f), 7.0))
    again = video_shots(g.path, VIDEO_DEFAULTS, tmp_path)
    assert (again.features["audio"] == 7.0).all() and np.array_equal(again.features["place"], first.features["place"])
    video_shots(g.path, replace(VIDEO_DEFAULTS, sample_fps=2.0), tmp_path)  # other settings: another entry
    assert len(list((tmp_path / "video").iterdir())) == 2


# ----------------------------------------------------------------------------- bad inputs: one line, nothing written


def _only_video(path: Path) -> None:
    out = av.open(str(path), "w")
    s = out.add_stream("mpeg4", rate=FPS)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    for i in range(6):
        f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="bgr24")
        f.pts = i
        for p in s.encode(f):
            out.mux(p)
    for p in s.encode(None):
        out.mux(p)
    out.close()


def _only_audio(path: Path) -> None:
    out = av.open(str(path), "w", format="mp4")
    s = out.add_stream("aac", rate=16000)
    f = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
    f.sample_rate, f.pts = 16000, 0
    for p in [*s.encode(f), *s.encode(None)]:
        out.mux(p)
    out.close()


def _damaged(path: Path, source: Path) -> None:
    data = bytearray(source.read_bytes())
    data[len(data) // 3: 2 * len(data) // 3] = b"\0" * (2 * len(data) // 3 - len(data) // 3)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case,message", [
    ("missing", "expected a video file, found nothing there"),
    ("text", "not a video file FFmpeg can read"),
    ("audio_only", "expected a video stream, found only audio"),
    ("video_only", "expected an audio stream (the audio features need one), found none"),
    ("damaged", "damaged video"),
    ("truncated", "not a video file FFmpeg can read"),
])
def test_bad_videos_are_one_line_and_leave_nothing(videos, tmp_path, capsys, case, message):
    movie = tmp_path / f"{case}.mp4"
    if case == "text":
        movie.write_text("hello\n")
    elif case == "audio_only":
        _only_audio(movie)
    elif case == "video_only":
        _only_video(movie)
    elif case == "damaged":
        _damaged(movie, videos[1].path)
    elif case == "truncated":
        movie.write_bytes(videos[1].path.read_bytes()[:5000])
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["video", str(movie), "--out", str(out), "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {movie}: ") and message in err[0], err
    assert list(out.iterdir()) == [] and not list(cache.rglob("*.npy"))


def test_annotations_past_the_end_stop_the_download_stage_and_leave_nothing(videos, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    g = videos[0]
    (folder / g.path.name).write_bytes(g.path.read_bytes())
    (folder / "clip0.scenes.csv").write_text("start_s\n0\n500\n")
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(source="video", path=str(folder), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(SystemExit) as e:
        run_stage("download", tmp_path, "--out", "data/movies")
    assert e.value.code == 1
    assert not (tmp_path / "data" / "movies").exists() and not list((tmp_path / "data").glob(".*"))


def test_video_source_reports_scene_starts_off_every_cut_and_refuses_clashing_ids(videos, tmp_path):
    from sceneseg.data.sources import materialize

    folder = tmp_path / "videos"
    folder.mkdir()
    g = videos[0]
    (folder / "a b.mp4").write_bytes(g.path.read_bytes())
    cut_times = (g.shot_end_frame[:-1] + 1) / FPS
    i = int(np.argmax(np.diff(cut_times)))
    off = (cut_times[i] + cut_times[i + 1]) / 2  # amid the longest shot: far from every cut
    assert np.abs(cut_times - off).min() > VIDEO_DEFAULTS.tolerance_s
    starts = sorted([*g.scene_start_s.tolist(), off])
    (folder / "a b.scenes.csv").write_text("start_s\n" + "".join(f"{t}\n" for t in starts))
    summary = materialize("video", tmp_path / "movies", path=str(folder), cache_dir=tmp_path / "cache",
                          video=VIDEO_DEFAULTS)
    assert summary["n_movies"] == 1 and summary["n_boundaries"] == len(g.scene_start_s) - 1
    (w,) = read_index(tmp_path / "movies")["warnings"]
    assert w.startswith(f"{folder / 'a b.scenes.csv'}: scene start {off:.3f} s: nearest cut at")
    assert load_movie(tmp_path / "movies" / "a_b").boundary.tolist() == (np.diff(g.shot_scene) != 0).tolist()
    (folder / "a_b.mp4").write_bytes(g.path.read_bytes())
    (folder / "a_b.scenes.csv").write_text("start_s\n0\n")
    with pytest.raises(ValueError, match=r"a_b.mp4: its movie id 'a_b' is also that of .*a b.mp4: rename one$"):
        materialize("video", tmp_path / "movies2", path=str(folder), cache_dir=tmp_path / "cache", video=VIDEO_DEFAULTS)
    assert not (tmp_path / "movies2").exists()


# ----------------------------------------------------------------------------- ResNet-50 weights


def test_resnet50_weights_load_safely_and_give_place_features(videos, tmp_path, capsys):
    from sceneseg.video.resnet import ResNet50

    torch.manual_seed(0)
    net = ResNet50()
    weights = tmp_path / "places365.pth.tar"  # the Places365 layout: {"state_dict": {"module.<name>": ...}}
    torch.save({"epoch": 90, "arch": "resnet50", "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}
                | {"module.fc.weight": torch.zeros(365, 2048), "module.fc.bias": torch.zeros(365)}}, weights)
    v = replace(VIDEO_DEFAULTS, extractor="resnet50", weights=str(weights), sample_fps=0.5)
    shots = detect_and_describe(videos[2].path, v)
    assert shots.extractor.startswith("resnet50-") and shots.features["place"].shape == (len(videos[2].shot_end_frame), 2048)
    # place of shot 0 = the mean embedding of the frames it samples, here frame 0 only (stride 24 > its length)
    from sceneseg.video.decode import Frame, VideoReader

    first = next(f for f in VideoReader(videos[2].path, v.frame_width).read() if isinstance(f, Frame))
    rgb = torch.from_numpy(first.bgr[..., ::-1].copy()).permute(2, 0, 1).float()[None] / 255
    rgb = (rgb - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net.eval()(rgb)[0].numpy()
    assert videos[2].shot_end_frame[0] < 24
    assert np.allclose(shots.features["place"][0], expected, atol=1e-4)

    # torchvision's ResNet-50 state_dict has 320 entries, 318 without the classifier (fc.weight, fc.bias)
    assert len(net.state_dict()) == 318
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    for path, message in ((tmp_path / "none.pt", "found nothing there"), (videos[0].path, "readable with torch.load"),
                          (bad, "found 317 parameters missing (e.g. bn1.bias); 1 of another shape (e.g. conv1.weight: [3], "
                                "expected [64, 3, 7, 7])")):
        out = tmp_path / "out"
        assert main(["video", str(videos[2].path), "--out", str(out), "--extractor", "resnet50",
                     "--weights", str(path)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and message in err[0], err
        assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------- the pipeline on videos


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """download -> split -> featurize -> features -> train -> evaluate on a folder of generated videos."""
    d = tmp_path_factory.mktemp("videopipe")
    for i in range(8):
        write_video(d / "videos" / f"movie{i}.mp4", seed=100 + i, n_scenes=6, shots_per_scene=(1, 4))
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(source="video", path=str(d / "videos"), cache_dir=str(d / "cache"))
    p["split"]["test_fraction"] = 0.25
    p["featurize"]["seq_len"] = 5
    p["train"].update(epochs=8)
    p["simseq"].update(hidden=8, crop_len=8, batch_size=8, tree_iters=20)
    p["evaluate"].update(timeline_movies=1, boosted_max_iter=20)
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    data = ["--movies", "data/movies", "--split", "data/split.json", "--windows", "data/windows",
            "--features", "data/features"]
    run_stage("download", d, "--out", "data/movies")
    run_stage("split", d, "--movies", "data/movies", "--out", "data/split.json")
    run_stage("featurize", d, "--movies", "data/movies", "--split", "data/split.json", "--out", "data/windows")
    run_stage("features", d, "--movies", "data/movies", "--out", "data/features")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        run_stage("train", d, *data, "--model", "models/model.pt", "--metrics", "metrics/train.json",
                  "--details", "results/train.json", "--plots", "plots/train")
    (d / "train.log").write_text(log.getvalue())
    run_stage("evaluate", d, *data, "--model", "models/model.pt", "--metrics", "metrics/eval.json",
              "--details", "results/eval.json", "--per_movie", "results/per_movie.json",
              "--predictions", "results/predictions.json", "--plots", "plots/eval", "--figures", "plots/eval/figures")
    return d


def test_the_pipeline_trains_on_videos_and_recovers_the_scenes_of_held_out_ones(trained):
    from sceneseg.models.checkpoint import load_checkpoint

    index = read_index(trained / "data" / "movies")
    assert index["source"] == "video" and index["warnings"] == [] and index["extractor"] == ["weightfree/1"]
    movie = load_movie(trained / "data" / "movies" / "movie0")
    assert sorted(movie.features) == ["action", "audio", "place"] and movie.fps == FPS
    # labels = the generated scenes: a boundary after the last shot of every scene but the last
    g = write_video(trained / "check" / "movie0.mp4", seed=100, n_scenes=6, shots_per_scene=(1, 4), annotate=False)
    assert movie.boundary.tolist() == (np.diff(g.shot_scene) != 0).tolist()
    ckpt = load_checkpoint(trained / "models" / "model.pt")
    assert list(ckpt.feature_dims) == ["place", "action", "audio"] and ckpt.extractor == "weightfree/1"
    ev = json.loads((trained / "results" / "eval.json").read_text())
    test_ids = json.loads((trained / "data" / "split.json").read_text())["test"]
    tests = [load_movie(trained / "data" / "movies" / i) for i in test_ids]
    rate = np.mean(np.concatenate([m.boundary for m in tests]))
    assert 0.2 < rate < 0.6 and ev["model"]["AP"] > 0.9 and ev["model"]["AP"] > rate + 0.3, (ev["model"], rate)
    # the train log says which modalities were used; the features of every video are cached
    assert "train: simseq.modalities: ['cast'] absent from the movies, using ['place', 'action', 'audio']" in \
        (trained / "train.log").read_text()
    assert len(list((trained / "cache" / "video").iterdir())) == 8


def test_sceneseg_video_writes_the_movie_and_its_scenes(trained, tmp_path, capsys):
    g = write_video(tmp_path / "new movie.mp4", seed=555, n_scenes=5, shots_per_scene=(1, 3), annotate=False)
    out = tmp_path / "out"
    assert main(["video", str(g.path), "--out", str(out)]) == 0  # features only
    err = capsys.readouterr().err
    assert "content detector" in err and "weightfree/1" in err
    assert sorted(p.name for p in out.iterdir()) == ["new_movie"]
    m = load_movie(out / "new_movie")
    assert m.shot_end_frame.tolist() == g.shot_end_frame.tolist() and m.boundary is None and "cast" not in m.features
    assert main(["video", str(g.path), "--out", str(out), "--model", str(trained / "models" / "model.pt")]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err
    assert sorted(p.name for p in out.iterdir()) == ["new_movie", "scenes.csv", "scenes.json", "scenes_probs.csv",
                                                     "timeline_new_movie.png"]
    doc = json.loads((out / "scenes.json").read_text())
    rec = doc["movies"][0]
    assert doc["model_features"] == rec["features"] == "weightfree/1" and rec["source"] == str(g.path)
    truth = set(np.flatnonzero(np.diff(g.shot_scene) != 0).tolist())  # transitions that end a generated scene
    found = {s["first_shot"] - 1 for s in rec["scenes"][1:]}
    assert len(found ^ truth) <= 1, (found, truth)
    for s in rec["scenes"]:  # times from the timestamps: frame / fps at a constant rate
        assert s["start_s"] == round(s["first_frame"] / FPS, 3) and s["end_s"] == round((s["last_frame"] + 1) / FPS, 3)
    rows = (out / "scenes.csv").read_text().splitlines()
    assert rows[0] == "imdb_id,scene,first_shot,last_shot,first_frame,last_frame,boundary_prob,start_s,end_s"
    assert len(rows) == 1 + len(rec["scenes"])
    # features from another extractor: said, not silently accepted
    np.save(out / "new_movie" / "extractor.npy", np.str_("resnet50-0123456789ab+weightfree/1"))
    assert main(["predict", str(out / "new_movie"), "--model", str(trained / "models" / "model.pt")]) == 0
    err = capsys.readouterr().err
    assert "warning: movie new_movie's features come from 'resnet50-0123456789ab+weightfree/1', the model was trained " \
           "on features from 'weightfree/1'" in err


def test_lgss_trains_on_the_modalities_videos_have(trained):
    from sceneseg.models.checkpoint import load_checkpoint

    p = yaml.safe_load((trained / "params.yaml").read_text())
    p["train"].update(model="lgss", epochs=2, batch_size=4)
    p["lgss"].update(sim_channel=8, lstm_hidden=8, fc_hidden=8, lr_decay_epochs=[1])
    (trained / "params-lgss.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        run_stage("train", trained, "--movies", "data/movies", "--split", "data/split.json", "--windows", "data/windows",
                  "--features", "data/features", "--model", "models/lgss.pt", "--metrics", "metrics/lgss.json",
                  "--details", "results/lgss.json", "--plots", "plots/lgss", "--params", "params-lgss.yaml")
    assert "train: lgss.modalities: ['cast'] absent from the movies, using ['place', 'action', 'audio']" in log.getvalue()
    ckpt = load_checkpoint(trained / "models" / "lgss.pt")
    assert list(ckpt.feature_dims) == ["place", "action", "audio"] and ckpt.extractor == "weightfree/1"
    assert ckpt.config["net"]["fusion_weights"] == {"place": 0.5, "action": 0.2, "audio": 0.1}


def test_the_video_libraries_are_imported_only_for_videos():
    code = ("import sys; import sceneseg.data.sources, sceneseg.predict, sceneseg.video.command, sceneseg.cli; "
            "print(' '.join(m for m in ('av', 'scenedetect', 'cv2') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


def test_params_yaml_video_section_is_the_command_defaults():
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert p["data"]["video"] == {k: getattr(VIDEO_DEFAULTS, k) for k in p["data"]["video"]}
    assert set(p["data"]["video"]) == set(VIDEO_DEFAULTS.__dataclass_fields__)
