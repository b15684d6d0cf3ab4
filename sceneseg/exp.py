"""``python -m sceneseg.exp [dvc exp run options]`` (``make exp ARGS=...``): check the params an
experiment would run with, then start ``dvc exp run`` with the same arguments.

``dvc exp run -S key=value`` writes the override into params.yaml and deletes a stage's outputs
before the stage runs; a bad value is then found by the stage, after the model, metrics and plots
are gone and with the bad value left in params.yaml. This front end applies the ``-S`` overrides
to a copy of params.yaml with DVC's own override code (so the copy is what DVC would write; a
grid of the queue is expanded into each of its combinations) and validates every copy as the stages
will (``sceneseg.config``: unknown key, type, range; ``data.source`` and ``data.path``). Any problem
is one line and exit code 1, before DVC starts: nothing in the workspace changes. Otherwise it
runs ``dvc exp run`` with the venv's ``bin`` first on PATH, so the stages run with this interpreter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from sceneseg.config import load_params
from sceneseg.data.sources import check_source
from sceneseg.models.registry import all_model_params

PARAMS_FILE = "params.yaml"


def set_params(argv: list[str]) -> list[str]:
    """The ``-S``/``--set-param`` values among ``dvc exp run`` arguments, in order."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("-S", "--set-param", action="append", default=[])
    known, _ = ap.parse_known_args(argv)
    return known.set_param


def _has_key(doc: object, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


def overrides_of(set_params: list[str]) -> list[list[str]]:
    """The override lists DVC would apply to params.yaml: one per run (several for a queue's grid).

    Overrides of another params file (``other.yaml:key=value``) are not checked here.
    """
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps, to_hydra_overrides

    try:
        by_file = to_path_overrides(set_params)
        ours = by_file.get(PARAMS_FILE, [])
        if not any(o.is_sweep_override() for o in to_hydra_overrides(ours)):
            return [ours]
        return [sweep[PARAMS_FILE] for sweep in get_hydra_sweeps({PARAMS_FILE: ours})]
    except Exception as e:  # hydra's grammar errors, DVC's InvalidArgumentError: one line, whatever the type
        reason = " ".join(str(e).split())  # hydra's message spans lines
        raise ValueError(f"-S {' -S '.join(set_params)}: not a valid override ({reason})") from None


def check_overrides(params_path: Path, overrides: list[str]) -> None:
    """Apply ``overrides`` to a copy of ``params_path`` as DVC does and validate the result as the stages do.

    Raises ``ValueError`` (one line naming the override or key) when the experiment would fail on its params.
    """
    from dvc.utils.hydra import apply_overrides

    raw = yaml.safe_load(params_path.read_text()) or {}
    for o in overrides:
        key = o.split("=", 1)[0]
        if not key.startswith(("+", "~")) and not _has_key(raw, key):
            section, _, _ = key.rpartition(".")
            known = sorted(_section(raw, section)) if section and _has_key(raw, section) else sorted(raw)
            raise ValueError(f"-S {o}: unknown params key '{key}' in {params_path}; expected one of "
                             f"{', '.join(f'{section}.{k}' if section else k for k in known)}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / PARAMS_FILE
        shutil.copyfile(params_path, copy)
        try:
            apply_overrides(copy, overrides)
        except Exception as e:  # DVC's InvalidArgumentError wraps hydra's reason
            raise ValueError(f"-S {' -S '.join(overrides)}: {' '.join(str(e.__cause__ or e).split())}") from None
        try:
            params = load_params(copy)
            all_model_params(params, str(copy))
            check_source(params.data.source, params.data.path)
        except ValueError as e:
            where = f"params.yaml with -S {' -S '.join(overrides)}" if overrides else str(params_path)
            raise ValueError(f"{where}: {str(e).removeprefix(f'{copy}: ')}") from None


def _section(raw: dict, dotted: str) -> dict:
    for part in dotted.split("."):
        raw = raw[part]
    return raw if isinstance(raw, dict) else {}


def main(argv: list[str] | None = None) -> int:
    """Validate, then replace this process with ``dvc exp run ARGV`` (returns only on a problem)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not Path(PARAMS_FILE).is_file():
            raise ValueError(f"{PARAMS_FILE}: expected the pipeline parameters file in {Path.cwd()}, found nothing")
        for overrides in overrides_of(set_params(argv)):
            check_overrides(Path(PARAMS_FILE), overrides)
    except ValueError as e:
        print(f"error: {e}; nothing was run, params.yaml and the outputs are unchanged", file=sys.stderr)
        return 1
    bin_dir = str(Path(sys.executable).parent)  # the stages' `python` is this environment's
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    dvc = shutil.which("dvc", path=env["PATH"])
    if dvc is None:
        print(f"error: no dvc found next to {sys.executable} or on PATH: run `make setup`", file=sys.stderr)
        return 1
    os.execve(dvc, [dvc, "exp", "run", *argv], env)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
