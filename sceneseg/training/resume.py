"""Resume an interrupted training run from its last finished epoch.

After every finished epoch a training loop hands its full state to a :class:`ResumeStore`: the
network, optimiser and learning-rate schedule, every random generator (torch CPU and CUDA,
numpy's global one and the loop's own ``Generator``s, Python's ``random``), the kept best-epoch
weights, the loss history and the epoch. In data-parallel training every rank calls ``save``:
the global generators of each rank (ranks draw their own dropout masks) are gathered to rank 0,
which writes them all in the one file, and each rank restores its own. The store writes it atomically (temp file, then rename)
to ``<data.cache_dir>/resume/<key>/state.pt``: outside the DVC outputs, which DVC deletes before
it reruns a stage. The key is a hash of everything that determines the run (train params, the
model's own params, featurize and split params, the device, the bytes of the data and of this
package's code), so a state is only ever picked up by the run it came from; another run's state
is ignored, with a line saying what differs. The stage removes the state once its outputs are
written. States hold only tensors and builtins: they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sceneseg.training.distributed import Dist

STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"  # the key's parts, to say which changed
FORMAT = "sceneseg-resume/2"  # 2: the global generators of every rank


def digest_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over the names (relative to ``root``) and bytes of ``paths``, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(str(p.relative_to(root) if root else p.name).encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def data_digest(movies_dir: Path, split_file: Path, windows_dir: Path) -> str:
    """The content hash of the data a training run reads: converted movies, split and windows."""
    def files(d: Path) -> list[Path]:
        return [p for p in Path(d).rglob("*") if p.is_file()]

    parts = (digest_files(files(movies_dir), movies_dir), digest_files([split_file]),
             digest_files(files(windows_dir), windows_dir))
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()


PACKAGE = Path(__file__).resolve().parents[1]  # sceneseg/


def code_digest(package: Path = PACKAGE) -> str:
    """The content hash of the whole package's source (training code, models, data loading):
    a state saved by other code is not resumed."""
    return digest_files(package.rglob("*.py"), root=package)


def key_parts(params: dict[str, object], data: str, code: str, device: str) -> dict[str, str]:
    """Part name -> short hash: each params section (plain builtins) by name, the data, the code, the device."""
    parts = {f"{name} params": _hash_json(value) for name, value in params.items()}
    return {**parts, "data": data[:16], "code": code[:16], "device": device}


def _hash_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def global_rng_state() -> dict:
    """The global random generators (torch CPU and CUDA, numpy's legacy one, Python's) as tensors and builtins."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_global_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"]:
        torch.cuda.set_rng_state_all(s["cuda"])
    name, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(s["python"])


@dataclass(frozen=True)
class Restored:
    """What a loop continues from: the epochs already done, its history, and whether it had ended."""

    epoch: int
    history: dict
    last: bool  # the saved epoch was the run's last (all epochs, or an early stop)


class ResumeStore:
    """The resume state of one training run (its key), kept in ``root/<key>/``."""

    def __init__(self, root: Path, parts: dict[str, str]) -> None:
        self.root = Path(root)
        self.parts = dict(parts)
        self.key = _hash_json(self.parts)
        self.dir = self.root / self.key
        self.saved_epoch = 0  # the last epoch whose state is on disk (0: none)
        self.saved_last = False
        self.warned = False

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    def restore(self, objects: dict, generators: dict[str, np.random.Generator], epochs: int,
                dist: Dist | None = None) -> Restored | None:
        """Load this run's saved state into ``objects`` (anything with ``load_state_dict``: network,
        optimiser, schedule) and ``generators``, and set the global generators (with ``dist``, this
        rank's own); None (and one line saying why) when the run starts afresh."""
        if not self.state_file.is_file():
            self._say_why_fresh()
            return None
        try:
            state = torch.load(self.state_file, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != self.key:
                raise ValueError("not a resume state of this run")
            if len(state["rng"]) != (dist.world_size if dist else 1):
                raise ValueError("saved by another number of processes")
        except Exception as e:  # noqa: BLE001 - a damaged state means starting afresh, never a failed run
            print(f"train: the saved state in {self.state_file} cannot be used ({type(e).__name__}); starting afresh")
            return None
        # the same key means the same code and params: the state fits these objects
        for name, obj in objects.items():
            obj.load_state_dict(state["objects"][name])
        for name, g in generators.items():
            g.bit_generator.state = state["generators"][name]
        set_global_rng_state(state["rng"][dist.rank if dist else 0])
        self.saved_epoch, self.saved_last = int(state["epoch"]), bool(state["last"])
        print(f"train: resuming after epoch {self.saved_epoch} of {epochs} (state in {self.state_file})")
        return Restored(self.saved_epoch, state["history"], self.saved_last)

    def save(self, epoch: int, objects: dict, generators: dict[str, np.random.Generator], history: dict,
             last: bool = False, dist: Dist | None = None) -> None:
        """Write the state after ``epoch`` (1-based) atomically; ``last``: no epoch follows it.

        With ``dist`` every rank calls this (a collective): ranks above 0 hand their global
        generators to rank 0, which writes the state (``objects``, ``generators`` and ``history``
        are the same on every rank). A failed write (full disk, no permission) is said once and
        training goes on without resume."""
        rng = [global_rng_state()] if dist is None else dist.gather(global_rng_state())
        if rng is None:  # a rank above 0: rank 0 writes its generators
            return
        state = {
            "format": FORMAT, "key": self.key, "epoch": int(epoch), "last": bool(last),
            "objects": {name: obj.state_dict() for name, obj in objects.items()},
            "generators": {name: g.bit_generator.state for name, g in generators.items()},
            "rng": rng,  # one per rank
            "history": history,
        }
        tmp = self.dir / f".{STATE_FILE}.tmp"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / MANIFEST_FILE).write_text(json.dumps(self.parts, indent=2) + "\n")
            with open(tmp, "wb") as f:  # a file object: a full disk is an OSError naming the cause
                torch.save(state, f)
            os.replace(tmp, self.state_file)
        except OSError as e:
            if not self.warned:
                print(f"train: cannot save the resume state in {self.dir} ({e.strerror}); training goes on, "
                      "but an interrupted run will start afresh")
                self.warned = True
            return
        finally:
            tmp.unlink(missing_ok=True)
        self.saved_epoch, self.saved_last = int(epoch), bool(last)

    def clear(self) -> None:
        """Remove this run's state (its outputs are written: nothing is left to resume)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def interrupted_message(self) -> str:
        """One line for an interruption: which epoch was running and which state is saved."""
        k, last = self.saved_epoch, self.saved_last
        if k == 0:  # data-parallel: the ranks saved in their processes, not this one
            k, last = self._saved_on_disk()
        if k == 0:
            return "interrupted during epoch 1; no epoch had finished, so the next run starts afresh"
        if last:
            return f"interrupted after the last epoch ({k}); its state is saved, run dvc repro to finish"
        return f"interrupted during epoch {k + 1}; the state of epoch {k} is saved, run dvc repro to resume"

    def _saved_on_disk(self) -> tuple[int, bool]:
        """(epoch, last) of this run's state on disk; (0, False) when there is none it could use."""
        try:
            state = torch.load(self.state_file, map_location="cpu", weights_only=True)
            if state.get("format") == FORMAT and state.get("key") == self.key:
                return int(state["epoch"]), bool(state["last"])
        except Exception:  # noqa: BLE001 - none, or damaged: the next run starts afresh
            pass
        return 0, False

    def _say_why_fresh(self) -> None:
        """When states of other runs exist, one line naming what differs from the newest of them."""
        others = [d for d in self.root.glob("*") if d != self.dir and (d / STATE_FILE).is_file()]
        if not others:
            return
        newest = max(others, key=lambda d: (d / STATE_FILE).stat().st_mtime)
        try:
            theirs = json.loads((newest / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            theirs = {}
        changed = [k for k in self.parts if theirs.get(k) != self.parts[k]] or ["the run's key"]
        print(f"train: starting afresh: the saved state in {newest} is of another run ({', '.join(changed)} "
              f"changed); it is kept until removed (rm -rf {self.root})")
