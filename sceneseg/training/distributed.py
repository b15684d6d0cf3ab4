"""Scale out: parallel jobs sharing one machine, and data-parallel training with torch.distributed.

- **CPU threads.** Jobs that each take torch's default thread count on a shared machine collapse
  each other (two 2-thread jobs on 2 cores ran ~50x slower). The user states once how many jobs
  share the machine, in the environment variable ``SCENESEG_JOBS`` (``make sweep JOBS=2`` sets it
  for ``dvc queue start -j 2``); each process then takes ``cores // (jobs x processes per job)``
  threads, at least 1, where ``cores`` are the cores this process may run on. :func:`thread_limit`
  holds torch and every OpenMP / BLAS pool (scikit-learn's tree fits) to that number.
- **GPUs.** On a machine with several GPUs each job claims one with a lock file held for the life
  of the process (``<tmp>/sceneseg-gpus/<uuid>.lock``), so parallel jobs land on different GPUs;
  when every GPU is claimed, the one with the most free memory is shared.
- **Data-parallel training.** :func:`launch` runs a function on ``train.world_size`` processes
  with PyTorch's elastic launcher (the engine behind ``torchrun``): gloo on CPU, NCCL with one GPU
  per process on CUDA. Inside, a :class:`Dist` shards each global batch and sums losses and
  gradients over the ranks. A failed or killed rank ends the whole job with a ``ValueError`` naming
  the rank; collectives time out after ``SCENESEG_DIST_TIMEOUT_S`` seconds (default 600) instead
  of hanging. Only rank 0's return value comes back; other ranks' stdout is discarded.
- **Several machines.** ``SCENESEG_NNODES`` (default 1), ``SCENESEG_NODE_RANK`` (0 on the machine
  that runs ``dvc repro``) and ``MASTER_ADDR`` / ``MASTER_PORT`` (node 0's address and a free port)
  use a static rendezvous, as ``torchrun --nnodes N --node_rank K --master_addr ...`` does;
  ``train.world_size`` is then the total number of processes, split evenly over the nodes.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

JOBS_ENV = "SCENESEG_JOBS"
TIMEOUT_ENV = "SCENESEG_DIST_TIMEOUT_S"


def _env_int(name: str, default: int, lo: int, environ=None) -> int:
    raw = (os.environ if environ is None else environ).get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if value < lo:
        raise ValueError(f"environment variable {name}: expected an integer >= {lo}, found {raw!r}")
    return value


def jobs_from_env(environ=None) -> int:
    """How many jobs share this machine, as the user stated it in ``SCENESEG_JOBS`` (default 1)."""
    return _env_int(JOBS_ENV, 1, 1, environ)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: respects taskset and cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity mask
        return os.cpu_count() or 1


def cpu_threads(num_threads: int, jobs: int, procs: int, cores: int) -> int | None:
    """Torch threads for one process of a job that runs ``procs`` processes, ``jobs`` jobs sharing
    ``cores`` cores. ``num_threads`` > 0 is taken as given; None keeps torch's default (one job of
    one process: today's behaviour)."""
    if num_threads:
        return num_threads
    if jobs == 1 and procs == 1:
        return None
    return max(1, cores // (jobs * procs))


# --------------------------------------------------------------------------------------------- GPUs

_claimed: list = []  # open lock files: a claim lasts as long as the process (the OS drops it at exit)


def choose_gpu(n: int, try_claim: Callable[[int], bool], free_memory: Callable[[int], int]) -> int:
    """The first GPU of ``0..n-1`` that ``try_claim`` wins; when all are taken, the one with the
    most ``free_memory`` (lowest index on a tie). ``free_memory`` is only asked in that case."""
    for i in range(n):
        if try_claim(i):
            return i
    free = [free_memory(i) for i in range(n)]
    return max(range(n), key=lambda i: (free[i], -i))


def _lock_claim(lock_dir: Path, name: str) -> bool:
    lock_dir.mkdir(parents=True, exist_ok=True)
    f = open(lock_dir / f"{name}.lock", "a")  # noqa: SIM115 - held open on purpose: the claim
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return False
    _claimed.append(f)
    return True


def claim_gpu(lock_dir: Path | None = None) -> int:
    """Index (among the visible CUDA devices) of the GPU this process should use; with one GPU, 0."""
    n = torch.cuda.device_count()
    if n <= 1:
        return 0
    lock_dir = lock_dir or Path(tempfile.gettempdir()) / "sceneseg-gpus"

    def gpu_name(i: int) -> str:  # the physical GPU, whatever CUDA_VISIBLE_DEVICES renumbers
        return str(getattr(torch.cuda.get_device_properties(i), "uuid", i))

    return choose_gpu(n, lambda i: _lock_claim(lock_dir, gpu_name(i)), lambda i: torch.cuda.mem_get_info(i)[0])


# ------------------------------------------------------------------------------- data parallelism

@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel group (torch.distributed is initialised)."""

    rank: int
    world_size: int
    device: torch.device

    def all_reduce(self, t: torch.Tensor) -> None:
        """``t`` summed over all ranks, in place (the one collective that :meth:`sum` and
        :meth:`sum_grads` use; tests replace it to run ranks as threads of one process)."""
        torch.distributed.all_reduce(t)

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of ``rows`` (sizes differ by at most one; may be empty)."""
        return np.array_split(rows, self.world_size)[self.rank]

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all ranks (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        self.all_reduce(t)
        return t.tolist()

    def gather(self, obj: object) -> list | None:
        """Every rank's ``obj`` (picklable), in rank order, on rank 0; None on the other ranks."""
        out = [None] * self.world_size if self.rank == 0 else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def sum_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace every gradient by its sum over the ranks, in one all-reduce of a flat buffer
        (a parameter without a gradient on this rank, e.g. its shard was empty, counts as zero)."""
        params = [p for p in params if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        self.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()


class WorkerNode(Exception):
    """This machine ran ranks of a multi-node job, but not rank 0: it writes no outputs."""


def nodes_from_env(environ=None) -> int:
    """How many machines a data-parallel job spans (``SCENESEG_NNODES``, default 1)."""
    return _env_int("SCENESEG_NNODES", 1, 1, environ)


def rendezvous(world_size: int, environ=None) -> tuple[int, int, dict]:
    """(nodes, processes per node, LaunchConfig rendezvous keywords) from the environment."""
    env = os.environ if environ is None else environ
    nnodes = nodes_from_env(env)
    if world_size % nnodes:
        raise ValueError(f"params key 'train.world_size': expected a multiple of SCENESEG_NNODES={nnodes} "
                         f"(processes are split evenly over the machines), found {world_size}")
    if nnodes == 1:  # as `torchrun --standalone`: a store on a free local port
        return 1, world_size, {"rdzv_backend": "c10d", "rdzv_endpoint": "localhost:0", "run_id": str(uuid.uuid4())}
    node_rank = _env_int("SCENESEG_NODE_RANK", 0, 0, env)
    if node_rank >= nnodes:
        raise ValueError(f"environment variable SCENESEG_NODE_RANK: expected 0..{nnodes - 1}, found {node_rank}")
    addr, port = env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", "")
    if not addr or not port:
        raise ValueError(f"SCENESEG_NNODES={nnodes}: set MASTER_ADDR and MASTER_PORT to node 0's address and a "
                         "free port on it (the same on every machine)")
    return nnodes, world_size // nnodes, {"rdzv_backend": "static", "rdzv_endpoint": f"{addr}:{port}",
                                          "rdzv_configs": {"rank": node_rank}, "run_id": "sceneseg"}


def launch(world_size: int, device_type: str, fn: Callable, args: tuple, threads: int | None = None):
    """Run ``fn(dist, *args)`` on ``world_size`` processes; return rank 0's result.

    ``fn`` must be importable (a module-level function): the processes are spawned. A rank that
    raises, exits or is killed ends all of them; the ValueError names the rank and its error.
    Raises :class:`WorkerNode` on a machine of a multi-node job that does not host rank 0.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"params key 'train.world_size': data-parallel training runs on cpu or cuda, "
                         f"found device {device_type!r}")
    nnodes, per_node, rdzv = rendezvous(world_size)
    if device_type == "cuda" and per_node > torch.cuda.device_count():
        raise ValueError(f"params key 'train.world_size': {per_node} processes on this machine need as many GPUs "
                         f"(one each), found {torch.cuda.device_count()}")
    timeout_s = _env_int(TIMEOUT_ENV, 600, 1)
    config = LaunchConfig(min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=per_node, max_restarts=0,
                          monitor_interval=0.5, start_method="spawn", **rdzv)
    # the agent logs every step and a failed rank's traceback several times: we say it once, below
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="sceneseg-ranks-") as errors:
        try:
            results = elastic_launch(config, _rank_main)(fn, args, device_type, threads, timeout_s, errors)
        except ChildFailedError as e:
            records = {int(f.stem[4:]): json.loads(f.read_text()) for f in Path(errors).glob("rank*.json")}
            ranks = list(range(world_size)) if nnodes == 1 else sorted(set(records) | set(e.failures))
            line, trace = failure_line(world_size, records, e.failures, ranks)
            if trace:
                print(trace, file=sys.stderr)
            raise ValueError(line) from None
        except SignalException:  # Ctrl-C or SIGTERM reached the launcher, which stopped the ranks
            raise KeyboardInterrupt from None
    if 0 not in results:
        raise WorkerNode(f"this machine ran ranks {min(results)}-{max(results)} of {world_size}; "
                         "the machine of rank 0 writes the outputs")
    return results[0]


# errors a rank sees when *another* rank died: the cause is elsewhere
_PEER_SYMPTOMS = ("Connection closed by peer", "remote worker", "Connection reset by peer", "Broken pipe",
                  "NCCL communicator was aborted")


def failure_line(world_size: int, records: dict[int, dict], failures: dict, ranks: list[int]) -> tuple[str, str]:
    """One line for a failed data-parallel job, naming the rank that caused it, and that rank's
    traceback when its error is a bug rather than bad input (not a ValueError or OSError).

    ``records``: rank -> {"time", "text", "trace"} of the Python errors the ranks recorded;
    ``failures``: the launcher's ProcessFailures (exit codes, signals); ``ranks``: this machine's.
    The cause is the earliest recorded error that is not a symptom of a peer's death, else a rank
    of this machine that died without a Python error (killed), else the earliest symptom."""
    end = "; the other ranks were stopped"
    causes = {r: rec for r, rec in records.items() if not any(s in rec["text"] for s in _PEER_SYMPTOMS)}
    if causes:
        rank = min(causes, key=lambda r: (causes[r]["time"], r))
        text, trace = causes[rank]["text"], causes[rank]["trace"]
        if "Timed out" in text or "timed out" in text:  # not a bug here: another rank stopped answering
            text += f" (a collective waited {TIMEOUT_ENV} seconds for a rank that hung or died)"
            trace = ""
        return (f"train.world_size {world_size}: rank {rank} failed: {text}{end}",
                "" if text.startswith(("ValueError", "OSError")) else trace)
    silent = [r for r in ranks if r not in records]
    if silent:
        signalled = [r for r in silent if r in failures and failures[r].exitcode < 0]
        rank = (signalled or silent)[0]
        how = (f"killed by {failures[rank].signal_name()}" if signalled
               else "died without a Python error: killed by a signal or the out-of-memory killer")
        return f"train.world_size {world_size}: rank {rank} failed ({how}){end}", ""
    rank = min(records, key=lambda r: (records[r]["time"], r))
    return f"train.world_size {world_size}: rank {rank} failed: {records[rank]['text']}{end}", ""


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """Within the context, torch and every OpenMP and BLAS thread pool of the process (scikit-learn's
    boosted-tree fits, numpy's matrix products) use ``threads`` threads; None or 0: no limit. Two
    pools of 2 threads on a 2-core machine whose other core is busy spin against each other (a
    300-tree fit on 12k rows took minutes instead of seconds)."""
    if not threads:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)


def _rank_main(fn: Callable, args: tuple, device_type: str, threads: int | None, timeout_s: int, errors: str):
    """One rank (the launcher records its error for the agent): join the process group, run
    ``fn``, leave. Only rank 0 prints and returns."""
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - logs are rank 0's; errors still reach stderr
    if device_type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    torch.distributed.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                         timeout=datetime.timedelta(seconds=timeout_s))
    try:
        with thread_limit(threads):
            out = fn(Dist(rank, world, device), *args)
    except BaseException as e:  # recorded with its time: the launcher tells a cause from its symptoms
        record = {"time": time.time(), "text": f"{type(e).__name__}: {e}".splitlines()[0],
                  "trace": traceback.format_exc()}
        (Path(errors) / f".rank{rank}.tmp").write_text(json.dumps(record))
        os.replace(Path(errors) / f".rank{rank}.tmp", Path(errors) / f"rank{rank}.json")
        raise
    finally:
        torch.distributed.destroy_process_group()
    return out if rank == 0 else None


def sharded_backward(loss: Callable[[], tuple[torch.Tensor, torch.Tensor]], has_rows: bool,
                     opt: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], dist: Dist) -> tuple[float, float]:
    """Gradients of one global batch's weighted mean loss, of which this rank computes its shard.

    ``loss()`` returns this shard's (weighted loss sum, weight sum); it is not called when the rank
    has no rows (fewer rows than ranks in a last batch: the rank only joins the sums). Each shard's
    sum is divided by the weight sum of the *whole* batch and the gradients are summed over the
    ranks, so the step that follows is the one-process step on the whole batch (up to float
    rounding). Returns the global (weighted loss sum, weight sum)."""
    opt.zero_grad(set_to_none=True)
    if has_rows:
        s, w = loss()
        total, norm = dist.sum(s.item(), w.item())
        (s / max(norm, 1e-12)).backward()
    else:
        total, norm = dist.sum(0.0, 0.0)
    dist.sum_grads(params)
    return total, norm
