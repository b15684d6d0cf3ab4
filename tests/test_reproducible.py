"""The same params and data give a byte-identical checkpoint wherever they run: the stages write no
path, time or git commit into models/model.pt, so a DVC cache or remote shared between clones matches.
Two projects in different folders (one a git repository with uncommitted changes, the other not a
repository at all) run the stages download to train in this process and must write the same bytes."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml
from test_pipeline import tiny_params
from test_resume import run_data_stages, run_stage

DATA = ["--movies", "data/movies", "--split", "data/split.json", "--windows", "data/windows",
        "--features", "data/features"]


def train_in(d: Path) -> str:
    p = tiny_params()
    p["data"]["synthetic"].update(n_movies=5, min_shots=40, max_shots=60)
    p["train"].update(epochs=2, num_threads=1)
    p["simseq"]["tree_iters"] = 5
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    run_data_stages(d)
    run_stage("train", d, *DATA, "--model", "models/model.pt", "--metrics", "metrics/train.json",
              "--details", "results/train.json", "--plots", "plots/train")
    return hashlib.md5((d / "models/model.pt").read_bytes()).hexdigest()


def test_two_clones_write_the_same_checkpoint(tmp_path):
    a, b = tmp_path / "clone_a", tmp_path / "elsewhere" / "clone_b"
    a.mkdir()
    b.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], cwd=a, check=True)
    (a / "notes.txt").write_text("committed\n")
    subprocess.run(git + ["add", "-A"], cwd=a, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=a, check=True)
    (a / "notes.txt").write_text("uncommitted change: a dirty work tree\n")
    first, second = train_in(a), train_in(b)
    assert first == second
    # and the bytes depend on what was trained: another seed gives another checkpoint
    p = yaml.safe_load((b / "params.yaml").read_text())
    p["train"]["seed"] = 1
    (b / "params.yaml").write_text(yaml.safe_dump(p))
    run_stage("train", b, *DATA, "--model", "models/model.pt", "--metrics", "metrics/train.json",
              "--details", "results/train.json", "--plots", "plots/train")
    assert hashlib.md5((b / "models/model.pt").read_bytes()).hexdigest() != first
