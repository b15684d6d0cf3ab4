"""End to end: the real `dvc repro` on tiny synthetic data, in a temporary git repo."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd)}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def tiny_params() -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["synthetic"].update(n_movies=5, min_shots=30, max_shots=45, seed=1)
    p["data"]["cache_dir"] = ".cache"
    p["featurize"]["seq_len"] = 5
    p["train"].update(epochs=2, batch_size=4)
    p["lgss"].update(sim_channel=8, lstm_hidden=8, fc_hidden=8, lr_decay_epochs=[1], eval_batch_size=16)
    p["simseq"].update(hidden=8, crop_len=16)
    p["evaluate"]["timeline_movies"] = 1
    return p


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project's files (tracked and new, not ignored) as a fresh git repo."""
    dst = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("metrics/", "plots/")) and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    (dst / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    sh(["git", "init", "-q"], dst)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], dst)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], dst)
    return dst


def test_dvc_repro_end_to_end(project):
    r = sh(["dvc", "repro"], project)
    # window validation: no validation movies of their own, and the split line does not say "0 val"
    assert "train movies (validation: 20% of their windows), 1 test movies" in r.stdout and " 0 val" not in r.stdout
    ev = json.loads((project / "results/eval.json").read_text())
    for system in ("model", "boosted", "stacked", "shipped", "chance"):
        for key in ("AP", "mAP", "Miou", "Precision", "Recall", "F1", "Recall@3s"):
            assert 0.0 <= ev[system][key] <= 1.0, (system, key)
    assert 0.0 <= ev["model_tuned"]["threshold"] <= 1.0
    tr = json.loads((project / "results/train.json").read_text())
    assert tr["test_loss"] > 0 and tr["train_loss"] > 0 and tr["val_loss"] > 0
    # the DVC metrics are the headline numbers only, copied from the detailed results
    head = json.loads((project / "metrics/eval.json").read_text())
    assert head == {"AP": ev["model"]["AP"], "mAP": ev["model"]["mAP"], "Miou": ev["model_tuned"]["Miou"],
                    "F1": ev["model_tuned"]["F1"],
                    **{name: {"AP": ev[name]["AP"], "Miou": ev[name]["Miou"]}
                       for name in ("boosted", "stacked", "shipped", "chance")}}
    assert json.loads((project / "metrics/train.json").read_text()) == {
        "epoch": tr["best_epoch"], "train_loss": tr["train_loss"], "val_loss": tr["val_loss"]}
    pm = json.loads((project / "results/per_movie.json").read_text())
    split = json.loads((project / "data/split.json").read_text())
    assert sorted(pm["model"]["AP"]) == sorted(split["test"])
    assert (project / "plots/train/loss.png").stat().st_size > 10_000
    assert (project / "plots/eval/figures/pr_curve.png").exists()
    assert json.loads((project / "plots/eval/pr_model.json").read_text())[0].keys() == {"recall", "precision"}
    for ref in ("stacked", "boosted"):
        assert sorted(pm[ref]["AP"]) == sorted(split["test"])
        assert 0.0 <= ev[ref]["threshold"] <= 1.0
    assert json.loads((project / "plots/eval/pr_boosted.json").read_text())[0].keys() == {"recall", "precision"}
    assert tr["model"] == "simseq"
    # the features stage's output: what the model reads, equal to the features computed on the fly
    from sceneseg.data.featurecache import FeatureSpec, attach, similarity
    from sceneseg.data.movies import load_movies
    from sceneseg.data.simfeatures import transition_features
    p = tiny_params()["simseq"]
    spec = FeatureSpec(tuple(p["modalities"]), tuple(p["widths"]), tuple(p["cross_widths"]), tuple(p["match_widths"]))
    movies = load_movies(project / "data/movies")
    assert sorted(f.stem for f in (project / "data/features").glob("tt*.npy")) == sorted(m.imdb_id for m in movies)
    for m, cached in zip(movies, attach(movies, project / "data/features")):
        direct = transition_features({k: m.features[k] for k in spec.modalities}, spec.widths, spec.cross_widths,
                                     spec.match_widths)
        np.testing.assert_array_equal(np.load(project / "data/features" / f"{m.imdb_id}.npy"), direct)
        assert similarity(cached, spec) is not None and np.array_equal(similarity(cached, spec), direct)
    # a second repro does nothing
    again = sh(["dvc", "repro"], project)
    assert "Running stage" not in again.stdout
    # the committed and ignored files after a run: git sees nothing new but the DVC metrics and plots
    status = sh(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout.split("\n")
    assert not [line for line in status if line and not line[3:].startswith(("metrics/", "plots/", "dvc.lock"))], status


def test_sceneseg_score_runs_on_the_pipeline_outputs(project):
    """`sceneseg score` right after a run: the evaluate stage's predictions of the test movies scored
    against data/movies give its own numbers; data/movies alone scores the shipped predictions."""
    from sklearn.metrics import average_precision_score

    sh(["dvc", "repro"], project)
    ev = json.loads((project / "results/eval.json").read_text())
    out = sh([str(BIN / "sceneseg"), "score", "data/movies", "--predictions", "results/predictions.json"], project)
    doc = json.loads(out.stdout)
    split = json.loads((project / "data/split.json").read_text())
    assert sorted(doc["AP_dict"]) == sorted(split["test"]) and doc["n_movies"] == len(split["test"])
    for key in ("AP", "mAP", "Miou", "Precision", "Recall", "F1"):
        assert doc[key] == pytest.approx(ev["model"][key], abs=1e-12), key
    thr = ev["model_tuned"]["threshold"]
    tuned = json.loads(sh([str(BIN / "sceneseg"), "score", "data/movies", "--predictions", "results/predictions.json",
                           "--threshold", str(thr)], project).stdout)
    assert tuned["Miou"] == pytest.approx(ev["model_tuned"]["Miou"], abs=1e-12)
    shipped = json.loads(sh([str(BIN / "sceneseg"), "score", "data/movies"], project).stdout)
    ids = sorted(p.name for p in (project / "data/movies").iterdir() if p.is_dir())
    gt = np.concatenate([np.load(project / "data/movies" / i / "boundary.npy") for i in ids])
    base = np.concatenate([np.load(project / "data/movies" / i / "baseline.npy") for i in ids])
    assert shipped["n_movies"] == 5 and shipped["AP"] == pytest.approx(average_precision_score(gt, base), abs=1e-9)


def table_width(text: str) -> int:
    return max(len(line.rstrip()) for line in text.splitlines())


def test_exp_run_with_new_lr_reruns_only_train_and_evaluate(project):
    sh(["dvc", "repro"], project)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], project)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], project)
    # the features are computed once: the model's learning rate reruns only train and evaluate
    r = sh([sys.executable, "-m", "sceneseg.exp", "-S", "simseq.lr=0.001"],
           project)  # = make exp ARGS=...
    ran = {line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train", "evaluate"}, r.stdout
    show = sh(["dvc", "exp", "show", "--json"], project)
    assert "0.001" in show.stdout
    # a second experiment; then the table a person reads fits a 160-column terminal
    sh([sys.executable, "-m", "sceneseg.exp", "-S", "simseq.lr=0.003"], project)
    wide = {**os.environ, "COLUMNS": "1000"}
    plain = sh(["dvc", "exp", "show", "--only-changed", "--no-pager"], project, env=wide).stdout
    assert table_width(plain) <= 160, plain
    # the worst case of the plain command: every headline number of the model changed
    every = sh(["dvc", "exp", "show", "--only-changed", "--no-pager", "--keep",
                "^(AP|mAP|Miou|F1|epoch|train_loss|val_loss)$"], project, env=wide).stdout
    assert table_width(every) <= 160, every
    # `make show`'s command at 160 columns: AP and Miou of the baseline and both experiments, in full
    show_cmd = re.search(r"^show:.*\n\t(.*)$", (project / "Makefile").read_text(), re.M).group(1)
    show_cmd = show_cmd.split("dvc ", 1)[1].replace("$$", "$")
    table = sh(["bash", "-c", f"dvc {show_cmd} --no-pager"], project, env={**os.environ, "COLUMNS": "160"}).stdout
    assert table_width(table) <= 160 and "…" not in table, table
    header = next(line.split() for line in table.splitlines() if "Experiment" in line)
    assert "AP" in header and "Miou" in header and not any(h.startswith(("models/", "data/")) for h in header), header
    rows = [line.split() for line in table.splitlines() if re.search(r"\[\w+-\w+\]", line)]
    assert len(rows) == 2
    for row in rows:  # "├── <sha> [name] hh:mm PM": 3 more words than "Experiment Created"
        assert len(row) == len(header) + 3, (header, row)
        for key in ("AP", "Miou"):
            assert 0 <= float(row[header.index(key) + 3]) <= 1, (key, row)
    # a width the features read makes them stale, and with them train
    sh(["git", "checkout", "params.yaml"], project)
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["simseq"]["widths"] = [1, 2, 4]
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    dry = sh(["dvc", "repro", "--dry"], project)
    ran = {line.split("'")[1] for line in dry.stdout.splitlines() if line.startswith("Running stage")}
    # (evaluate follows once train has written a new model: a dry run cannot know that it will)
    assert ran >= {"features", "train"} and not ran & {"download", "split", "featurize"}, dry.stdout
    # keys only the other model reads (LGSS's inference batch among them) rerun nothing; back to the
    # committed run first (the workspace holds the last experiment's params, lock and outputs)
    sh(["git", "checkout", "--", "."], project)
    sh(["dvc", "checkout", "--force"], project)

    def dry_run() -> set[str]:
        out = sh(["dvc", "repro", "--dry"], project).stdout
        return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}

    assert dry_run() == set()
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["lgss"].update(eval_batch_size=7, lr=0.5)
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert dry_run() == set()
    p["simseq"]["dropout"] = 0.1  # a key the selected model reads: the check can fail
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert "train" in dry_run()
    sh(["git", "checkout", "params.yaml"], project)


def _sceneseg_imports(path: Path) -> set[Path]:
    """The project files a file imports anywhere (functions included): each module and the
    ``__init__.py`` of every package above it (importing a module runs them)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module, *(f"{node.module}.{a.name}" for a in node.names)] \
            if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        for n in names:
            for f in (ROOT / f"{n.replace('.', '/')}.py", ROOT / n.replace(".", "/") / "__init__.py"):
                if (n == "sceneseg" or n.startswith("sceneseg.")) and f.is_file():
                    found.add(f)
                    found |= {ROOT / d / "__init__.py" for d in f.relative_to(ROOT).parents
                              if (ROOT / d / "__init__.py").is_file() and d != Path(".")}
    return found


def _closure(*files: Path) -> set[Path]:
    need, todo = set(files), list(files)
    while todo:
        for g in _sceneseg_imports(todo.pop()) - need:
            need.add(g)
            todo.append(g)
    return need


STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("model", ["simseq", "lgss"])
@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_are_exactly_the_project_modules_the_stage_imports(stage, model):
    """A change to any module a stage runs reruns it, and a change to any other module does not:
    dvc.yaml's deps (``${train.model}`` resolved to ``model``) hold the stage's import closure and no
    other project file. The registry imports the selected model's package on use (``kind`` module),
    so train and evaluate import that package and not the other's."""
    from sceneseg.config import MODEL_SECTIONS
    from sceneseg.models.registry import MODELS

    assert set(MODELS) == set(MODEL_SECTIONS) == {"simseq", "lgss"}
    st = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    script = ROOT / st["cmd"].split()[1]
    kind = ROOT / (MODELS[model].split(":")[0].replace(".", "/") + ".py")
    uses_model = any("${train.model}" in d for d in st["deps"])
    need = _closure(script, kind) if uses_model else _closure(script)
    deps = set()
    for d in st["deps"]:
        p = ROOT / d.replace("${train.model}", model)
        assert p.exists() or d.startswith(("data/", "models/")), f"dvc.yaml stage {stage}: dep {d} does not exist"
        deps |= set(p.rglob("*.py")) if p.is_dir() else {p}
    project = {f for f in deps if f.suffix == ".py" and ROOT in f.parents}
    missing = sorted(str(f.relative_to(ROOT)) for f in need - project)
    extra = sorted(str(f.relative_to(ROOT)) for f in project - need)
    assert not missing, f"dvc.yaml stage {stage} lacks deps {missing}"
    assert not extra, f"dvc.yaml stage {stage} lists deps it does not import: {extra}"


@pytest.mark.parametrize("stage,banned", [
    ("split", ("torch", "sklearn", "sceneseg.models")),
    ("featurize", ("torch", "sklearn", "sceneseg.models")),
    # the dataset's pickles hold torch tensors: download needs torch to read, check and write them
    ("download", ("sklearn", "sceneseg.models")),
    ("features", ("torch", "sklearn", "sceneseg.models.simseq.kind", "sceneseg.models.registry")),
])
def test_the_data_stages_import_no_model_code(stage, banned):
    """Loading params no longer imports the models: the data stages import neither scikit-learn nor
    any model's code (and split, featurize and features not torch), checked in a fresh interpreter."""
    code = ("import runpy, sys; sys.path[:0] = ['stages', '.']; runpy.run_path('stages/%s.py', run_name='not_main'); "
            "print(' '.join(sorted(sys.modules)))" % stage)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(r.stdout.split())
    assert "sceneseg.config" in loaded
    found = sorted(m for m in loaded for b in banned if m == b or m.startswith(b + "."))
    assert not found, f"stage {stage} imports {found}"


def test_models_are_a_choice_and_read_only_their_own_keys(project):
    sh(["dvc", "repro"], project)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], project)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run", "--allow-empty"], project)
    # a key of the model not trained changes nothing
    r = sh(["dvc", "exp", "run", "-S", "lgss.sim_channel=16"], project)
    assert "Running stage" not in r.stdout, r.stdout
    # selecting LGSS retrains and re-evaluates with it; its checkpoint says so and predict uses it
    r = sh(["dvc", "exp", "run", "-S", "train.model=lgss", "-S", "evaluate.recall_window_s=5"], project)
    ran = {line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train", "evaluate"}, r.stdout
    assert json.loads((project / "results/train.json").read_text())["model"] == "lgss"
    ev = json.loads((project / "results/eval.json").read_text())
    assert "Recall@5s" in ev["model"] and "Recall@3s" not in ev["model"]
    assert 0.0 <= ev["model_tuned"]["Recall@5s"] <= 1.0
    out = sh([str(BIN / "sceneseg"), "predict", "data/movies", "--model", "models/model.pt"], project)
    doc = json.loads(out.stdout)
    assert doc["model_kind"] == "lgss" and len(doc["movies"]) == 5
    sh(["git", "checkout", "params.yaml"], project)


@pytest.mark.parametrize("edit,message", [
    (lambda p: p["train"].update(bogus=1), "unknown params key 'train.bogus'"),
    (lambda p: p["data"].update(source="nowhere"), "'data.source': expected one of synthetic, moviescenes, local, video, found 'nowhere'"),
    (lambda p: p["data"].update(source="local", path="/no/such/data.zip"), "/no/such/data.zip"),
])
def test_bad_params_stop_the_stage_with_one_line(project, tmp_path, edit, message):
    p = tiny_params()
    edit(p)
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(p))
    out = tmp_path / "movies"
    r = sh([sys.executable, "stages/download.py", "--params", str(bad), "--out", str(out)], project, check=False)
    assert r.returncode == 1
    assert message in r.stderr and r.stderr.startswith("error: ")
    assert not out.exists()


def outputs(project: Path) -> dict[str, bytes]:
    files = ["params.yaml", "dvc.lock", "models/model.pt", *(f"{d}/{n}" for d in ("metrics", "results")
                                                             for n in ("eval.json", "train.json"))]
    return {f: (project / f).read_bytes() for f in files} | {
        str(p.relative_to(project)): p.read_bytes() for p in sorted((project / "data/movies").rglob("*.npy"))[:8]}


@pytest.mark.parametrize("args,message", [
    (["-S", "train.lr=-1"], "params.yaml with -S train.lr=-1: params key 'train.lr': expected a value in (0, 10], found -1.0"),
    (["-S", "train.epoch=3"], "-S train.epoch=3: unknown params key 'train.epoch' in params.yaml; expected one of train.batch_size"),
    (["-S", "+train.epoch=3"], "unknown params key 'train.epoch'"),
    (["-S", "data.source=local", "-S", "data.path=/nonexistent"], "data.path: expected a zip archive or a folder of tt*.pkl, /nonexistent does not exist"),
    (["--queue", "-S", "train.lr=0.001,-2"], "params.yaml with -S train.lr=-2: params key 'train.lr'"),
    (["-S", "train.lr=[1"], "-S train.lr=[1: not a valid override"),
])
def test_a_failed_experiment_leaves_params_and_outputs_intact(project, args, message):
    """`make exp` checks the params an experiment would run with before DVC touches anything."""
    sh(["dvc", "repro"], project)
    before = outputs(project)
    r = sh([sys.executable, "-m", "sceneseg.exp", *args], project, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert lines[0].endswith("nothing was run, params.yaml and the outputs are unchanged")
    assert outputs(project) == before
    assert "Running stage" not in r.stdout


def test_a_stage_outside_the_venv_says_to_activate_it(project):
    """A stage started by a python without the project's packages: one line, exit 1, no traceback."""
    r = subprocess.run([sys.executable, "-E", "-S", "stages/split.py", "--movies", "data/movies", "--out", "x.json"],
                       cwd=project, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "lacks the project's packages" in r.stderr and "source .venv/bin/activate" in r.stderr
    assert "Traceback" not in r.stderr and not (project / "x.json").exists()
