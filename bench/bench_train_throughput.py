"""Training throughput and peak memory of LGSS at the real dimensions: fast form vs literal form.

    .venv/bin/python bench/bench_train_throughput.py [--batch-size 8] [--threads 1] [--steps 20]

Each form runs in its own child process (so peak RSS is its own): random features at the real
dimensions (place 2048, cast/action/audio 512; shot_num 4, seq_len 10, 512 channels, hidden 512),
one training step = forward + weighted cross-entropy + backward + Adam step (lr 1e-2, wd 5e-4).
Data loading is not included: the batches are pre-made tensors. Memory is ``ru_maxrss`` (peak
resident set of the child, includes the ~0.3 GiB of the Python + torch import) and its rise over
the RSS right after the import. ``--profile`` prints a torch.profiler table of the fast form.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GIB = 1024**3
FEATURE_DIMS = {"place": 2048, "cast": 512, "action": 512, "audio": 512}
SEQ_LEN = 10
# MovieScenes (sceneseg/data/moviescenes_manifest.csv): 64 movies, 106,041 shots, 105,977 transitions;
# the seed's 57 train movies hold 92,958 transitions, 80% of them train windows, 20% val.
N_SHOTS, N_TRANSITIONS, TRAIN_MOVIE_TRANSITIONS = 106_041, 105_977, 92_958
EPOCHS = 30


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(form: str, batch_size: int, steps: int, eval_batch_size: int, adam: str, profile: bool) -> dict:
    """Time ``steps`` training steps of one form in this process; returns the numbers as a dict."""
    import torch
    import torch.nn.functional as F

    from sceneseg.models.lgss.network import DEFAULT_FUSION_WEIGHTS, LGSS, ModelConfig

    rss0 = rss_bytes()
    torch.manual_seed(0)
    cfg = ModelConfig(dict(FEATURE_DIMS), dict(DEFAULT_FUSION_WEIGHTS))
    model = LGSS(cfg, fast=form == "fast")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=5e-4, **{adam: True})
    class_weights = torch.tensor([0.5, 5.0])

    def batch(n: int) -> dict[str, torch.Tensor]:
        feats = {m: torch.rand(n, SEQ_LEN, 4, d) for m, d in FEATURE_DIMS.items()}
        feats["cast"] *= (torch.rand(n, SEQ_LEN, 4, 1) > 0.3).float()  # shots without a face are zeros
        return feats

    feats, labels = batch(batch_size), torch.randint(0, 2, (batch_size * SEQ_LEN,))

    def step() -> None:
        loss = F.cross_entropy(model(feats).reshape(-1, 2), labels, weight=class_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: allocations, Adam state
    times, cpu_times = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    eval_feats = batch(eval_batch_size)
    eval_times = []
    with torch.no_grad():
        model(eval_feats)
        for _ in range(3):
            t0 = time.perf_counter()
            model(eval_feats)
            eval_times.append(time.perf_counter() - t0)
    eval_s = statistics.median(eval_times)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25), file=sys.stderr)
    step_s = statistics.median(times)
    return {
        "form": form,
        "threads": torch.get_num_threads(),
        "step_s": step_s,
        "train_tps": batch_size * SEQ_LEN / step_s,
        "cpu_step_s": statistics.median(cpu_times),
        "eval_tps": eval_batch_size * SEQ_LEN / eval_s,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rise": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0,
        "load": os.getloadavg()[0],
    }


def run_child(args: argparse.Namespace, form: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", form, "--steps", str(steps), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--eval-batch-size", str(args.eval_batch_size), "--adam", args.adam]
    if args.profile and form == "fast":
        cmd.append("--profile")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(results: list[dict], batch_size: int) -> None:
    print(f"batch {batch_size} x seq_len {SEQ_LEN}, threads {results[0]['threads']}")
    for r in results:
        print(f"{r['form']:>6}: train {r['train_tps']:8.1f} transitions/s ({r['step_s'] * 1e3:7.1f} ms/step, "
              f"CPU time {r['cpu_step_s'] * 1e3:7.1f} ms/step), "
              f"eval {r['eval_tps']:8.1f} transitions/s, peak RSS {r['peak_rss'] / GIB:5.2f} GiB "
              f"(+{r['peak_rise'] / GIB:4.2f} GiB over import), load avg {r['load']:.1f}")
    fast = results[0]
    if len(results) > 1:
        direct = results[1]
        print(f"fast / direct training throughput: {fast['train_tps'] / direct['train_tps']:.1f}x wall, "
              f"{direct['cpu_step_s'] / fast['cpu_step_s']:.1f}x CPU time (steadier on a shared machine)")
    for label, n_train in [("brief's ~90k train transitions/epoch", 90_000),
                           ("seed split: 80% of 92,958 train + 20% val eval", TRAIN_MOVIE_TRANSITIONS)]:
        if n_train == 90_000:
            seconds = EPOCHS * n_train / fast["train_tps"]
        else:
            seconds = EPOCHS * (0.8 * n_train / fast["train_tps"] + 0.2 * n_train / fast["eval_tps"])
        print(f"projected {EPOCHS} epochs, {label}: {seconds / 3600:.2f} h")
    total_d = sum(FEATURE_DIMS.values())
    window_bytes = N_TRANSITIONS * 4 * total_d * 4
    print(f"materialised windows [*, {SEQ_LEN}, 4, {total_d}] float32 for all {N_TRANSITIONS:,} transitions: "
          f"{window_bytes / GIB:.2f} GiB non-overlapping (stride {SEQ_LEN}), "
          f"{SEQ_LEN * window_bytes / GIB:.1f} GiB sliding (stride 1); "
          f"per-movie arrays {N_SHOTS:,} x {total_d} float32: {N_SHOTS * total_d * 4 / GIB:.2f} GiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in each child")
    p.add_argument("--steps", type=int, default=20, help="timed steps of the fast form (median reported)")
    p.add_argument("--direct-steps", type=int, default=3, help="timed steps of the literal form (0: skip it)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--adam", choices=["foreach", "fused"], default="fused", help="torch.optim.Adam implementation")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of the fast form")
    p.add_argument("--child", choices=["fast", "direct"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        result = child(args.child, args.batch_size, args.steps, args.eval_batch_size, args.adam, args.profile)
        print(json.dumps(result))
        return
    results = [run_child(args, "fast", args.steps)]
    if args.direct_steps > 0:
        # The literal form materialises [B*S, 512, D] per branch: eval at the training batch size.
        direct_args = argparse.Namespace(**{**vars(args), "eval_batch_size": args.batch_size})
        results.append(run_child(direct_args, "direct", args.direct_steps))
    report(results, args.batch_size)


if __name__ == "__main__":
    main()
