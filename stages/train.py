"""Stage train: fit the model that train.model selects, log losses per epoch, pick the decision
threshold on validation, save a self-contained checkpoint. An interrupted run resumes from its
last finished epoch (the state lives under data.cache_dir, see sceneseg.training.resume)."""

import _venv  # noqa: F401  (first: one line, not a traceback, when .venv is not active)

import json
from pathlib import Path

import torch
from dvclive import Live

from sceneseg.config import to_dict
from sceneseg.data.split import load_split
from sceneseg.data.windows import load_windows
from sceneseg.evaluation.plots import plot_losses
from sceneseg.models.base import TrainData
from sceneseg.models.checkpoint import save_checkpoint
from sceneseg.models.registry import get_model, model_params
from sceneseg.stage import Interrupted, run, stage_args, write_json, writing
from sceneseg.training.device import pick_device
from sceneseg.training.distributed import WorkerNode, available_cores, cpu_threads, jobs_from_env, thread_limit
from sceneseg.training.resume import ResumeStore, code_digest, data_digest, key_parts


def main(args, params) -> None:
    t = params.train
    # jobs sharing the machine (SCENESEG_JOBS) and data-parallel processes split the cores between them
    threads = cpu_threads(t.num_threads, jobs_from_env(), t.world_size, available_cores())
    device = pick_device(t.device, claim=t.world_size == 1)  # data-parallel ranks take one GPU each
    kind = get_model(t.model)
    own = model_params(params, t.model, args.params)  # the selected model's own section (make exp checks all)
    procs = f", {t.world_size} processes" if t.world_size > 1 else ""
    print(f"train: model {t.model}, device {device.type if procs else device}{procs} "
          f"({threads or torch.get_num_threads()} CPU threads{' each' if procs else ''})")
    wins = {n: load_windows(Path(args.windows) / f"{n}.npz") for n in ("train", "val", "test")}
    data = TrainData(Path(args.movies), load_split(Path(args.split)), wins, Path(args.features))

    live = Live(args.plots, dvcyaml=False, save_dvc_exp=False, report=None, resume=False)

    def on_epoch(epoch: int, losses: dict[str, float]) -> None:
        live.step = epoch
        live.log_metric("loss/train", losses["train"])
        live.log_metric("loss/val", losses["val"])

    # everything that determines the run: a saved state of another run is never picked up
    sections = {"train": to_dict(t), t.model: to_dict(own), "featurize": to_dict(params.featurize),
                "split": to_dict(params.split)}
    store = ResumeStore(Path(params.data.cache_dir).expanduser() / "resume", key_parts(
        sections, data_digest(Path(args.movies), Path(args.split), Path(args.windows)), code_digest(), device.type))
    try:
        with thread_limit(threads if t.world_size == 1 else None):  # data-parallel ranks set their own
            trained = kind.train(data, own, t, device, on_epoch=on_epoch, resume=store)
    except KeyboardInterrupt:
        raise Interrupted(store.interrupted_message()) from None
    except WorkerNode as e:  # a machine of a multi-node job other than rank 0's: nothing to write here
        print(f"train: {e}")
        return
    # no live.end(): it would add a summary metrics.json next to the loss TSVs (--metrics and --details have it)
    print(f"train: decision threshold {trained.threshold:.3f} (chosen on validation by {t.threshold_metric})")
    # the params this model depends on: the shared sections and its own (evaluate's do not change it)
    trained_with = {k: v for k, v in to_dict(params).items() if k not in ("evaluate", "models")}
    trained_with[t.model] = to_dict(own)
    extractors = sorted({m.extractor for m in data.movies("train")})
    if len(extractors) > 1:
        raise ValueError(f"{args.movies}: the train movies' features come from different extractors {extractors}")
    with writing(args.model):
        save_checkpoint(Path(args.model), t.model, trained.model, trained.config, trained.threshold,
                        t.threshold_metric, params=trained_with, commit="",  # no commit: the same run gives the same bytes in any clone
                        extractor=extractors[0])
    epochs = len(trained.train_loss)
    best = trained.best_epoch
    summary = {
        "model": t.model,
        # losses of the kept epoch (the one whose weights are saved), then of the last epoch
        "train_loss": trained.train_loss[best - 1], "val_loss": trained.val_loss[best - 1],
        "test_loss": trained.test_loss, "last_train_loss": trained.train_loss[-1],
        "last_val_loss": trained.val_loss[-1], "threshold": trained.threshold, "epochs": epochs,
        "best_epoch": best, **trained.extra,
    }
    # the DVC metrics (a few columns of `dvc exp show`): the kept epoch and its train and val loss;
    # every number (test loss, threshold, last epoch, ...) in --details
    write_json(args.metrics, {"epoch": best, "train_loss": summary["train_loss"], "val_loss": summary["val_loss"]})
    write_json(args.details, summary)
    with writing(Path(args.plots) / "loss.png"):
        plot_losses(list(range(1, epochs + 1)), trained.train_loss, trained.val_loss, Path(args.plots) / "loss.png",
                    test=trained.test_loss, kept_epoch=best)
    store.clear()  # the outputs are written: nothing is left to resume
    rate = trained.transitions_per_epoch * epochs / max(trained.seconds, 1e-9)
    print(f"train: {json.dumps(summary)}; {trained.seconds:.0f} s on {device}, {rate:.0f} transitions/s")


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "split", "windows", "features", "model", "metrics", "details", "plots"]))
