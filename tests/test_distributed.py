"""sceneseg.training.distributed: threads per job, GPU choice, and data-parallel LGSS and simseq on CPU (gloo).

SLOW for `make test`: the data-parallel tests spawn 2 processes each (10-25 s apiece on 2 cores,
most of it starting Python and torch) and the last one runs the real `dvc repro` with 2 ranks
(60-180 s each, simseq and LGSS); the whole file took 2.4 minutes (before the simseq stage test) on this project's busy 2-core VM. The unit tests
above them take about 10 s: `pytest tests/test_distributed.py -k "not launch and not gloo
and not rank and not stage"`.
"""

import copy
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import bank_and_windows, sharp_model, tiny_config, tiny_movie
from sceneseg.config import load_params, parse_params
from sceneseg.data.synthetic import SyntheticSpec
from sceneseg.models.lgss.training import sharded_step, window_loss
from sceneseg.models.registry import get_model
from sceneseg.training.distributed import (Dist, choose_gpu, cpu_threads, jobs_from_env, launch, nodes_from_env,
                                           rendezvous, sharded_backward)
from test_models import make_data, tiny

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_threads_split_the_cores_between_jobs_and_processes():
    assert cpu_threads(0, jobs=1, procs=1, cores=2) is None  # one job: torch's default, as before
    assert cpu_threads(0, jobs=2, procs=1, cores=2) == 1
    assert cpu_threads(0, jobs=2, procs=1, cores=16) == 8
    assert cpu_threads(0, jobs=3, procs=2, cores=16) == 2
    assert cpu_threads(0, jobs=4, procs=1, cores=2) == 1  # never 0
    assert cpu_threads(0, jobs=1, procs=2, cores=2) == 1
    assert cpu_threads(3, jobs=4, procs=2, cores=2) == 3  # an explicit train.num_threads wins


def test_jobs_come_from_the_environment_and_are_checked():
    assert jobs_from_env({}) == 1
    assert jobs_from_env({"SCENESEG_JOBS": ""}) == 1
    assert jobs_from_env({"SCENESEG_JOBS": "4"}) == 4
    assert jobs_from_env({"SCENESEG_JOBS": "1"}) == 1  # the lowest allowed value is allowed
    assert nodes_from_env({"SCENESEG_NNODES": "1"}) == 1 and nodes_from_env({}) == 1
    os_env = dict(os.environ)
    os_env.pop("SCENESEG_JOBS", None)
    with pytest.MonkeyPatch.context() as m:  # no argument: the process's own environment
        m.setattr(os, "environ", {**os_env, "SCENESEG_JOBS": "3"})
        assert jobs_from_env() == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match=r"SCENESEG_JOBS: expected an integer >= 1, found"):
            jobs_from_env({"SCENESEG_JOBS": bad})


def test_parallel_jobs_claim_different_gpus_then_share_the_emptiest():
    free = [10, 30, 30, 5]
    claims: set[int] = set()

    def try_claim(i):  # a lock per GPU, as the lock files do across processes
        if i in claims:
            return False
        claims.add(i)
        return True

    def no_memory_query(i):
        raise AssertionError("free memory is only asked when every GPU is claimed")

    assert [choose_gpu(4, try_claim, no_memory_query) for _ in range(4)] == [0, 1, 2, 3]
    assert choose_gpu(4, try_claim, lambda i: free[i]) == 1  # all claimed: most free memory, lowest index
    assert choose_gpu(1, lambda i: False, lambda i: 0) == 0


def test_gpu_claims_are_exclusive_between_processes(tmp_path):
    import subprocess
    import sys

    code = ("import sys, time; from pathlib import Path; from sceneseg.training.distributed import _lock_claim; "
            "print(_lock_claim(Path(sys.argv[1]), 'gpu0'), flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        other = subprocess.run([sys.executable, "-c", code.replace("time.sleep(30)", "pass"), str(tmp_path)],
                               capture_output=True, text=True, check=True)
        assert other.stdout.strip() == "False"  # held by the first process
    finally:
        holder.kill()
        holder.wait()
    again = subprocess.run([sys.executable, "-c", code.replace("time.sleep(30)", "pass"), str(tmp_path)],
                           capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "True"  # the OS dropped the claim when the holder died


def test_claim_gpu_locks_each_physical_gpu_once_then_picks_the_emptiest(tmp_path, monkeypatch):
    """Three GPUs seen through fakes of torch.cuda: claims go to GPUs 0, 1, 2 in turn, each a lock file
    named by the GPU's uuid (stable under CUDA_VISIBLE_DEVICES); once all are held, the one with the most
    free memory; with one GPU, 0 without a lock."""
    import types

    from sceneseg.training import distributed

    free = {0: 5, 1: 50, 2: 7}
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(distributed.torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=f"GPU-{i}a"))
    monkeypatch.setattr(distributed.torch.cuda, "mem_get_info", lambda i: (free[i], 100))
    monkeypatch.setattr(distributed, "_claimed", [])
    assert [distributed.claim_gpu(tmp_path / "locks") for _ in range(4)] == [0, 1, 2, 1]
    assert sorted(f.name for f in (tmp_path / "locks").iterdir()) == ["GPU-0a.lock", "GPU-1a.lock", "GPU-2a.lock"]
    assert len(distributed._claimed) == 3  # the held claims
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 2)  # two GPUs are claimed too,
    monkeypatch.setattr(distributed.tempfile, "gettempdir", lambda: str(tmp_path))  # by default in the temp dir
    assert distributed.claim_gpu() == 0 and (tmp_path / "sceneseg-gpus" / "GPU-0a.lock").is_file()
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 1)
    assert distributed.claim_gpu(tmp_path / "other") == 0 and not (tmp_path / "other").exists()


def test_shards_cover_a_batch_once_in_order():
    rows = np.arange(7)
    shards = [Dist(r, 3, CPU).shard(rows) for r in range(3)]
    assert [s.tolist() for s in shards] == [[0, 1, 2], [3, 4], [5, 6]]
    assert Dist(2, 3, CPU).shard(np.arange(2)).tolist() == []  # fewer rows than ranks: an empty shard


class Collective:
    """An all-reduce between threads of this process: each rank's tensor summed in rank order."""

    def __init__(self, n: int):
        self.barrier = threading.Barrier(n, timeout=60)
        self.slots: list[torch.Tensor | None] = [None] * n

    def all_reduce(self, rank: int, t: torch.Tensor) -> None:
        self.slots[rank] = t.detach().clone()
        self.barrier.wait()
        total = self.slots[0].clone()
        for s in self.slots[1:]:
            total += s
        self.barrier.wait()  # every rank has read the slots before the next call writes them
        t.copy_(total)


@dataclasses.dataclass(frozen=True)
class ThreadDist(Dist):
    """Dist whose ranks are threads: the real ``sum``, ``sum_grads`` and ``shard``, in one process
    (so mutation testing sees them; the two-process tests spawn their ranks)."""

    group: Collective | None = None

    def all_reduce(self, t: torch.Tensor) -> None:
        self.group.all_reduce(self.rank, t)


def run_ranks(n: int, fn) -> list:
    """``fn(dist)`` on ``n`` thread ranks sharing one Collective; their results in rank order."""
    group, out, errors = Collective(n), [None] * n, []

    def body(k: int) -> None:
        try:
            out[k] = fn(ThreadDist(k, n, CPU, group))
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(e)
            group.barrier.abort()

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return out


class Net(torch.nn.Module):
    """A linear layer, a parameter the loss never reaches and a frozen one."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2).double()
        self.unused = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        self.frozen = torch.nn.Parameter(torch.ones(2, dtype=torch.float64), requires_grad=False)


def test_sharded_backward_on_thread_ranks_gives_the_one_process_gradients():
    """7 rows over 2, 3 and 8 ranks (the last: one rank without rows, whose loss must not be
    called): every replica ends with the gradient of the whole batch's weighted mean, stale
    gradients cleared, zeros for a parameter the loss never reaches, none for a frozen one, no
    step taken; every rank returns the whole batch's (loss sum, weight sum)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0, 1, 1, 0])
    torch.manual_seed(0)
    base = Net()
    for weights in ([0.5, 5.0], [0.005, 0.05]):  # the second: a batch whose weight sum is below 1
        _check_sharded_backward(base, x, y, torch.tensor(weights, dtype=torch.float64))


def _check_sharded_backward(base: Net, x: torch.Tensor, y: torch.Tensor, cw: torch.Tensor) -> None:

    def loss_of(model: Net, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        assert len(rows) > 0, "the loss of a rank without rows must not be computed"
        r = torch.from_numpy(rows)
        return F.cross_entropy(model.lin(x[r]), y[r], weight=cw, reduction="sum"), cw[y[r]].sum()

    ref = copy.deepcopy(base)
    s, w = loss_of(ref, np.arange(7))
    (s / w).backward()
    assert w.item() == pytest.approx(cw[0].item() * 4 + cw[1].item() * 3)
    for n in (2, 3, 8):
        replicas = [copy.deepcopy(base) for _ in range(n)]
        opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in replicas]
        for m in replicas:
            for p in m.parameters():
                p.grad = torch.full_like(p, 9.0)  # stale: must not leak into the step

        def rank(d: Dist, replicas=replicas, opts=opts):
            mine = d.shard(np.arange(7))
            m = replicas[d.rank]
            return sharded_backward(lambda: loss_of(m, mine), len(mine) > 0, opts[d.rank], m.parameters(), d)

        for total, norm in run_ranks(n, rank):
            assert total == pytest.approx(s.item(), rel=1e-12) and norm == pytest.approx(w.item(), rel=1e-12)
        for m in replicas:
            torch.testing.assert_close(m.lin.weight.grad, ref.lin.weight.grad, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(m.lin.bias.grad, ref.lin.bias.grad, rtol=1e-12, atol=1e-15)
            assert torch.equal(m.unused.grad, torch.zeros(3, dtype=torch.float64))
            assert m.frozen.grad is None  # cleared by the optimiser, and no part of the sums
            assert torch.equal(m.lin.weight, base.lin.weight)  # the caller steps


def test_thread_ranks_sum_in_float64():
    out = run_ranks(3, lambda d: d.sum(float(d.rank), 0.1, 1e16))
    assert out == [[3.0, pytest.approx(0.3, rel=1e-15), 3e16]] * 3


def test_sharded_lgss_step_on_thread_ranks_is_the_one_process_step():
    """LGSS's data-parallel step (7 windows over 2, 3, 4 and 8 ranks: shards of one window and
    none): the gradients and the step of one process on all 7 windows, and the same class-weighted
    mean loss on every rank."""
    movies = [tiny_movie(f"tt{i:07d}", 24, seed=i) for i in range(2)]
    bank, w = bank_and_windows(movies, 5)
    rows = np.array([3, 0, 6, 1, 5, 2, 4])
    weight = torch.tensor([0.5, 5.0])
    base = sharp_model(tiny_config())
    one = copy.deepcopy(base)
    opt = torch.optim.SGD(one.parameters(), lr=0.05)
    loss = window_loss(one, bank, w, rows, weight)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for n in (2, 3, 4, 8):
        replicas = [copy.deepcopy(base) for _ in range(n)]
        opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in replicas]
        losses = run_ranks(n, lambda d, r=replicas, o=opts: sharded_step(r[d.rank], o[d.rank], bank, w, rows, weight, d))
        assert losses == [pytest.approx(loss.item(), rel=1e-6)] * n
        for m in replicas:
            for (name, p), q in zip(m.named_parameters(), one.parameters()):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
                torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
            assert not torch.equal(m.heads["place"].fc2.weight, base.heads["place"].fc2.weight)


def test_world_size_is_validated_for_every_model():
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert parse_params(raw).train.world_size == 1
    raw["train"]["world_size"] = 0
    with pytest.raises(ValueError, match=r"'train.world_size': expected a value in \[1, 1024\], found 0"):
        parse_params(raw)
    raw["train"]["world_size"] = 2
    for model in ("simseq", "lgss"):
        raw["train"]["model"] = model
        assert parse_params(raw).train.world_size == 2


def test_multi_node_rendezvous_needs_the_master_address():
    assert rendezvous(2, {})[:2] == (1, 2)
    with pytest.raises(ValueError, match="multiple of SCENESEG_NNODES=2"):
        rendezvous(3, {"SCENESEG_NNODES": "2"})
    with pytest.raises(ValueError, match="set MASTER_ADDR and MASTER_PORT"):
        rendezvous(4, {"SCENESEG_NNODES": "2"})
    nodes, per_node, kw = rendezvous(4, {"SCENESEG_NNODES": "2", "SCENESEG_NODE_RANK": "1",
                                         "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    assert (nodes, per_node, kw["rdzv_backend"], kw["rdzv_endpoint"], kw["rdzv_configs"]) == (
        2, 2, "static", "10.0.0.1:29500", {"rank": 1})


def test_rendezvous_settings_for_one_machine_and_for_several():
    """One machine: torchrun --standalone's settings (a c10d store on a free local port, a fresh run id);
    several: the static rendezvous at node 0's address, this node's rank (0 by default, checked), an
    integer number of processes per node, both MASTER_ADDR and MASTER_PORT required."""
    nodes, per_node, kw = rendezvous(3, {})
    assert (nodes, per_node, kw["rdzv_backend"], kw["rdzv_endpoint"]) == (1, 3, "c10d", "localhost:0")
    assert len(kw["run_id"]) == 36 and kw["run_id"] != rendezvous(3, {})[2]["run_id"] and set(kw) == {
        "rdzv_backend", "rdzv_endpoint", "run_id"}
    env = {"SCENESEG_NNODES": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    nodes, per_node, kw = rendezvous(4, env)
    assert (nodes, per_node, kw) == (2, 2, {"rdzv_backend": "static", "rdzv_endpoint": "10.0.0.1:29500",
                                            "rdzv_configs": {"rank": 0}, "run_id": "sceneseg"})
    assert type(per_node) is int
    assert rendezvous(4, {**env, "SCENESEG_NODE_RANK": "0"})[2]["rdzv_configs"] == {"rank": 0}  # 0 stated
    with pytest.raises(ValueError, match=r"^environment variable SCENESEG_NODE_RANK: expected 0\.\.1, found 2$"):
        rendezvous(4, {**env, "SCENESEG_NODE_RANK": "2"})
    for missing in ("MASTER_ADDR", "MASTER_PORT"):
        with pytest.raises(ValueError, match="set MASTER_ADDR and MASTER_PORT"):
            rendezvous(4, {k: v for k, v in env.items() if k != missing})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    params = load_params(ROOT / "params.yaml")
    return params, make_data(tmp_path_factory.mktemp("d") / "movies", SyntheticSpec(6, 40, 60, seed=1), params)


def assert_same_training(one, two, rtol: float) -> None:
    """Every parameter within 1e-5 (float32 rounding of a different summation order), losses within ``rtol``."""
    a, b = one.model.state_dict(), two.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)
    np.testing.assert_allclose(two.train_loss, one.train_loss, rtol=rtol)
    np.testing.assert_allclose(two.val_loss, one.val_loss, rtol=rtol)
    assert two.test_loss == pytest.approx(one.test_loss, rel=rtol)


def test_two_gloo_processes_train_the_same_lgss_as_one(data):
    """batch_size 4 split 2 + 2 (the last batches of an epoch 1 + 0 or 1 + 1): after 2 epochs of
    steps the weights, losses and threshold agree with one process to float32 rounding."""
    params, train_data = data
    common, own = tiny(params, "lgss", epochs=2, select_epoch="last", lr=1e-3)
    kind = get_model("lgss")
    one = kind.train(train_data, own, common, CPU, progress=False)
    epochs = []
    two = kind.train(train_data, own, dataclasses.replace(common, world_size=2), CPU, progress=False,
                     on_epoch=lambda e, losses: epochs.append((e, losses)))
    n_steps = 2 * -(-len(train_data.windows["train"]) // common.batch_size)
    assert n_steps >= 10
    assert_same_training(one, two, rtol=1e-6)
    assert two.threshold == one.threshold and two.best_epoch == one.best_epoch == 2
    assert [e for e, _ in epochs] == [1, 2] and epochs[1][1]["val"] == two.val_loss[1]


def test_two_gloo_processes_train_the_same_simseq_as_one(data):
    """Global batch 5 over 2 ranks, crops of 53 transitions: the 4 train movies (52-59 transitions)
    give 6 crops an epoch, so each epoch has a batch split 3 + 2 whose crops of 52 and 53 transitions
    are padded to one length, and a batch of 1 that leaves rank 1 without a crop. Without dropout
    (each rank draws its own masks): after 5 epochs of steps the weights, losses, validation APs and
    threshold agree with one process to float32 rounding."""
    params, train_data = data
    common, own = tiny(params, "simseq", epochs=5, crop_len=53, dropout=0.0)
    common = dataclasses.replace(common, batch_size=5)
    kind = get_model("simseq")
    one_epochs, two_epochs = [], []
    one = kind.train(train_data, own, common, CPU, progress=False, on_epoch=lambda e, v: one_epochs.append(v))
    two = kind.train(train_data, own, dataclasses.replace(common, world_size=2), CPU, progress=False,
                     on_epoch=lambda e, v: two_epochs.append(v))
    lengths = sorted(m.n_shots - 1 for m in train_data.movies("train"))
    assert lengths[:2] == [52, 52] and min(lengths[2:]) > 53  # two single short crops, the others two crops each
    assert_same_training(one, two, rtol=1e-5)
    np.testing.assert_allclose([v["val_ap"] for v in two_epochs], [v["val_ap"] for v in one_epochs], atol=1e-6)
    assert two.best_epoch == one.best_epoch and two.threshold == pytest.approx(one.threshold, abs=1e-6)
    assert len(two_epochs) == 5 and two_epochs[4]["val"] == two.val_loss[4]


def _rank_raises(dist):
    if dist.rank == 1:
        raise ValueError("movie tt0000001: broken on purpose")
    torch.distributed.barrier()


def _rank_killed(dist):
    if dist.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    torch.distributed.barrier()


def _rank_hangs(dist):
    if dist.rank == 1:
        time.sleep(600)  # never joins the collective: rank 0 must time out, not hang
    dist.sum(1.0)


def _rank_bug(dist):
    if dist.rank == 1:
        {}["no such key"]  # a bug, not bad input: its traceback is printed
    torch.distributed.barrier()


def _rank_speaks(dist):
    print(f"rank {dist.rank} of {dist.world_size} speaks", flush=True)
    torch.distributed.barrier()
    return dist.rank, torch.get_num_threads()


def test_only_rank_0_prints_and_returns(capfd):
    """... and each rank runs on the threads it is given."""
    assert launch(2, "cpu", _rank_speaks, (), threads=3) == (0, 3)
    out = capfd.readouterr().out
    assert "rank 0 of 2 speaks" in out and "rank 1" not in out, out


def test_a_failed_rank_stops_the_job_with_its_error(capsys):
    with pytest.raises(ValueError, match=r"rank 1 failed: ValueError: movie tt0000001: broken on purpose; the "
                                         r"other ranks were stopped$"):
        launch(2, "cpu", _rank_raises, (), threads=1)
    assert "Traceback" not in capsys.readouterr().err  # bad input: the one line says it all


def test_a_rank_with_a_bug_stops_the_job_and_prints_its_traceback_once(capsys):
    with pytest.raises(ValueError, match=r"rank 1 failed: KeyError: 'no such key'; the other ranks were stopped$"):
        launch(2, "cpu", _rank_bug, (), threads=1)
    err = capsys.readouterr().err  # the launcher's own stderr (the ranks write to the file descriptor)
    assert err.count("Traceback (most recent call last)") == 1, err
    assert "in _rank_bug" in err and err.rstrip().endswith("KeyError: 'no such key'"), err


def test_a_killed_rank_stops_the_job_naming_it():
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"rank 1 failed \((killed by SIGKILL|died without a Python error)"):
        launch(2, "cpu", _rank_killed, (), threads=1)
    assert time.perf_counter() - t0 < 120


def test_a_hung_rank_times_out_instead_of_hanging(monkeypatch):
    monkeypatch.setenv("SCENESEG_DIST_TIMEOUT_S", "5")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"rank 0 failed: .*(?i:timed out|timeout)"):
        launch(2, "cpu", _rank_hangs, (), threads=1)
    assert time.perf_counter() - t0 < 120


class FakeLauncher:
    """Stands in for torch's elastic_launch: records the LaunchConfig and the ranks' arguments, then returns
    ``results`` or raises ``error`` after writing ``records`` (rank -> error record) where the ranks would."""

    def __init__(self, monkeypatch, results=None, error=None, records=None):
        import torch.distributed.launcher.api as api

        self.results, self.error, self.records, self.seen = results, error, records or {}, {}
        monkeypatch.setattr(api, "elastic_launch", self)

    def __call__(self, config, entry):
        self.seen.update(config=config, entry=entry)

        def run(*args):
            self.seen["args"] = args
            errors = Path(args[-1])
            self.seen["errors_dir_existed"] = errors.is_dir()
            for rank, rec in self.records.items():
                (errors / f"rank{rank}.json").write_text(json.dumps(rec))
            if self.error is not None:
                raise self.error
            return self.results
        return run


def test_launch_gives_the_launcher_its_settings_and_returns_rank_0s_result(monkeypatch):
    from sceneseg.training import distributed

    fake = FakeLauncher(monkeypatch, results={0: "rank 0's model", 1: None})
    monkeypatch.setenv("SCENESEG_DIST_TIMEOUT_S", "7")
    assert launch(2, "cpu", _rank_raises, ("x", 1), threads=3) == "rank 0's model"
    c = fake.seen["config"]
    assert (c.min_nodes, c.max_nodes, c.nproc_per_node, c.max_restarts, c.monitor_interval, c.start_method,
            c.rdzv_backend, c.rdzv_endpoint) == (1, 1, 2, 0, 0.5, "spawn", "c10d", "localhost:0")
    assert fake.seen["entry"] is distributed._rank_main
    fn, args, device_type, threads, timeout_s, errors = fake.seen["args"]
    assert (fn, args, device_type, threads, timeout_s) == (_rank_raises, ("x", 1), "cpu", 3, 7)
    assert fake.seen["errors_dir_existed"] and not Path(errors).exists()  # a temporary folder, removed after
    assert Path(errors).name.startswith("sceneseg-ranks-")
    # the agent logs every step and a failed rank's traceback several times: only its own logger is quieted
    assert logging.getLogger("torch.distributed.elastic").level == logging.CRITICAL
    assert logging.getLogger().level != logging.CRITICAL
    monkeypatch.delenv("SCENESEG_DIST_TIMEOUT_S")
    launch(2, "cpu", _rank_raises, ())
    assert fake.seen["args"][3:5] == (None, 600)  # no thread limit; collectives wait 10 minutes by default
    monkeypatch.setenv("SCENESEG_DIST_TIMEOUT_S", "1")  # the shortest allowed
    launch(2, "cpu", _rank_raises, ())
    assert fake.seen["args"][4] == 1


def test_launch_on_a_machine_of_several(monkeypatch):
    """SCENESEG_NNODES 2: node 0 (one process) returns its rank 0's result, node 1 says it is a worker."""
    from sceneseg.training.distributed import WorkerNode

    for k, v in {"SCENESEG_NNODES": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    fake = FakeLauncher(monkeypatch, results={0: "rank 0's model"})
    assert launch(2, "cpu", _rank_raises, (), threads=1) == "rank 0's model"
    c = fake.seen["config"]
    assert (c.min_nodes, c.max_nodes, c.nproc_per_node, c.rdzv_backend, c.rdzv_endpoint, c.rdzv_configs["rank"],
            c.run_id) == (2, 2, 1, "static", "10.0.0.1:29500", 0, "sceneseg")
    monkeypatch.setenv("SCENESEG_NODE_RANK", "1")
    FakeLauncher(monkeypatch, results={2: None, 3: None})
    with pytest.raises(WorkerNode, match=r"^this machine ran ranks 2-3 of 4; the machine of rank 0 writes the outputs$"):
        launch(4, "cpu", _rank_raises, (), threads=1)


def test_launch_names_the_failed_rank_of_its_own_machine(monkeypatch, capsys):
    """On node 1 of 2 (ranks 2 and 3): a rank that exited without a Python error is named among this
    machine's ranks, not rank 0 of the other machine; a recorded OSError is bad input: no traceback."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    for k, v in {"SCENESEG_NNODES": "2", "SCENESEG_NODE_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    died = ChildFailedError("ranks", {3: ProcessFailure(local_rank=1, pid=1, exitcode=1, error_file="")})
    FakeLauncher(monkeypatch, error=died)
    with pytest.raises(ValueError, match=r"^train\.world_size 4: rank 3 failed \(died without a Python error: "):
        launch(4, "cpu", _rank_raises, (), threads=1)
    record = {"time": 1.0, "text": "OSError: disk full", "trace": "Traceback (most recent call last):\nOSError"}
    FakeLauncher(monkeypatch, error=died, records={2: record})
    with pytest.raises(ValueError, match=r"^train\.world_size 4: rank 2 failed: OSError: disk full; the other ranks "
                                         r"were stopped$"):
        launch(4, "cpu", _rank_raises, (), threads=1)
    assert "Traceback" not in capsys.readouterr().err


def test_launch_turns_a_signal_to_the_launcher_into_keyboard_interrupt(monkeypatch):
    from torch.distributed.elastic.multiprocessing.api import SignalException

    FakeLauncher(monkeypatch, error=SignalException("stop", signal.SIGTERM))
    with pytest.raises(KeyboardInterrupt):
        launch(2, "cpu", _rank_raises, (), threads=1)


def test_launch_refuses_devices_it_cannot_spread_over(monkeypatch):
    FakeLauncher(monkeypatch, results={0: None})
    with pytest.raises(ValueError, match=r"^params key 'train\.world_size': data-parallel training runs on cpu or "
                                         r"cuda, found device 'mps'$"):
        launch(2, "mps", _rank_raises, ())
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"^params key 'train\.world_size': 2 processes on this machine need as many "
                                         r"GPUs \(one each\), found 1$"):
        launch(2, "cuda", _rank_raises, ())
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # one GPU per process is enough
    assert launch(2, "cuda", _rank_raises, ()) is None


@pytest.mark.parametrize("model", ["simseq", "lgss"])
def test_train_stage_with_world_size_2_writes_outputs_that_evaluate_and_predict_load(model, tmp_path):
    """The real `dvc repro` (all stages) on 2 gloo processes, on tiny data (about 60 s)."""
    import json
    import shutil
    import subprocess

    import yaml
    from test_pipeline import BIN, sh, tiny_params

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("metrics/", "plots/")) and f != "dvc.lock":
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, tmp_path / f)
    p = tiny_params()
    p["train"].update(model=model, world_size=2, num_threads=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    sh(["git", "init", "-q"], tmp_path)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], tmp_path)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], tmp_path)
    r = sh(["dvc", "repro"], tmp_path)
    assert "device cpu, 2 processes (1 CPU threads each)" in r.stdout, r.stdout
    last_epoch = {"lgss": "epoch   2/2", "simseq": "train simseq: 2/2 epoch"}[model]
    log = r.stdout + r.stderr
    assert log.count(last_epoch) == 1, [ln for ln in log.splitlines() if "2/2" in ln]  # from rank 0 only
    tr = json.loads((tmp_path / "results/train.json").read_text())
    assert tr["model"] == model and tr["epochs"] == 2 and tr["test_loss"] > 0
    assert (tmp_path / "plots/train/loss.png").stat().st_size > 10_000
    assert len((tmp_path / "plots/train/plots/metrics/loss/val.tsv").read_text().splitlines()) == 3  # header + 2
    ev = json.loads((tmp_path / "results/eval.json").read_text())
    assert 0.0 <= ev["model"]["AP"] <= 1.0
    out = sh([str(BIN / "sceneseg"), "predict", "data/movies", "--model", "models/model.pt"], tmp_path)
    assert json.loads(out.stdout)["model_kind"] == model
    assert not list((tmp_path / ".cache").glob("resume/*/state.pt"))  # finished: no resume state left


def test_thread_limit_holds_torch_and_every_openmp_pool_then_restores_torch():
    import sklearn.ensemble  # noqa: F401  (loads scikit-learn's OpenMP runtime)
    from threadpoolctl import threadpool_info

    from sceneseg.training.distributed import thread_limit

    before = torch.get_num_threads()
    with thread_limit(1):
        assert torch.get_num_threads() == 1
        pools = [p for p in threadpool_info() if p["user_api"] == "openmp"]
        assert pools and all(p["num_threads"] == 1 for p in pools)
    assert torch.get_num_threads() == before
    with thread_limit(None):
        assert torch.get_num_threads() == before


def test_failure_line_names_the_rank_that_caused_it():
    """The one line a failed data-parallel job prints, from the ranks' records and the launcher's exit codes:
    the earliest real error (a peer's death is a symptom), its traceback only for a bug, a timeout explained,
    else a killed rank, signalled ones first, else the earliest symptom."""
    from types import SimpleNamespace

    from sceneseg.training.distributed import TIMEOUT_ENV, failure_line

    def rec(t, text, trace="Traceback ..."):
        return {"time": t, "text": text, "trace": trace}

    end = "; the other ranks were stopped"
    bug = {0: rec(1.0, "Connection closed by peer"), 1: rec(3.5, "RuntimeError: boom", "T1"), 2: rec(3.0, "KeyError: x", "T2")}
    assert failure_line(3, bug, {}, [0, 1, 2]) == (f"train.world_size 3: rank 2 failed: KeyError: x{end}", "T2")
    bug[1]["time"] = 3.0  # a tie: the lower rank
    assert failure_line(3, bug, {}, [0, 1, 2]) == (f"train.world_size 3: rank 1 failed: RuntimeError: boom{end}", "T1")
    for text in ("ValueError: params key 'x'", "OSError: disk full"):  # bad input: no traceback
        assert failure_line(2, {1: rec(1.0, text)}, {}, [0, 1]) == (f"train.world_size 2: rank 1 failed: {text}{end}", "")
    for text in ("RuntimeError: Timed out waiting", "RuntimeError: op timed out"):
        line, trace = failure_line(2, {1: rec(1.0, text)}, {}, [0, 1])
        assert line == (f"train.world_size 2: rank 1 failed: {text} (a collective waited {TIMEOUT_ENV} seconds for a "
                        f"rank that hung or died){end}") and trace == ""
    killed = SimpleNamespace(exitcode=-9, signal_name=lambda: "SIGKILL")
    exited = SimpleNamespace(exitcode=0, signal_name=lambda: "")  # ended by the launcher, no signal
    peer = {0: rec(1.0, "Connection reset by peer")}
    assert failure_line(3, peer, {1: exited, 2: killed}, [0, 1, 2]) == (
        f"train.world_size 3: rank 2 failed (killed by SIGKILL){end}", "")
    assert failure_line(3, peer, {1: exited}, [0, 1, 2]) == (
        f"train.world_size 3: rank 1 failed (died without a Python error: killed by a signal or the out-of-memory "
        f"killer){end}", "")
    symptoms = {0: rec(4.0, "Broken pipe"), 1: rec(2.0, "Connection closed by peer")}
    assert failure_line(2, symptoms, {}, [0, 1]) == (f"train.world_size 2: rank 1 failed: Connection closed by peer{end}", "")
