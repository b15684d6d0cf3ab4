"""Stage train: fit LGSS with the published recipe, log losses per epoch, pick the decision
threshold on validation, save a self-contained checkpoint."""

import json
from pathlib import Path

import torch
from dvclive import Live

from sceneseg.checkpoint import git_commit, save_checkpoint
from sceneseg.config import to_dict
from sceneseg.inference import ShotBank, pick_device
from sceneseg.model import ModelConfig
from sceneseg.movies import load_movies
from sceneseg.plots import plot_losses
from sceneseg.stage import run, stage_args
from sceneseg.threshold import validation_threshold
from sceneseg.train import Recipe, fit, input_scales
from sceneseg.windows import load_windows


def main(args, params) -> None:
    t, f = params.train, params.featurize
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = pick_device(t.device)
    print(f"train: device {device} ({torch.get_num_threads()} CPU threads)")
    wins = {n: load_windows(Path(args.windows) / f"{n}.npz") for n in ("train", "val", "test")}
    banks = {}
    for name, w in wins.items():
        if name == "val" and w.movie_ids == wins["train"].movie_ids:
            banks[name] = banks["train"]  # val windows are windows of the train movies
        else:
            banks[name] = ShotBank(load_movies(Path(args.movies), w.movie_ids), t.modalities, device, f.shot_num)
    dims = {m: int(banks["train"].features[m].shape[1]) for m in t.modalities}
    model_cfg = ModelConfig(feature_dims=dims, fusion_weights={m: t.fusion_weights[m] for m in t.modalities},
                            shot_num=f.shot_num, sim_channel=t.sim_channel, lstm_hidden=t.lstm_hidden,
                            fc_hidden=t.fc_hidden, input_scale=input_scales(banks["train"]) if t.scale_inputs else None)
    recipe = Recipe(lr=t.lr, weight_decay=t.weight_decay, lr_decay_epochs=tuple(t.lr_decay_epochs),
                    lr_decay_gamma=t.lr_decay_gamma, class_weights=tuple(t.class_weights), epochs=t.epochs,
                    batch_size=t.batch_size, eval_batch_size=t.eval_batch_size,
                    select_epoch=t.select_epoch, seed=t.seed)

    live = Live(args.plots, dvcyaml=False, save_dvc_exp=False, report=None, resume=False)

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        live.step = epoch
        live.log_metric("loss/train", train_loss)
        live.log_metric("loss/val", val_loss)

    model, hist = fit(model_cfg, recipe, (banks["train"], wins["train"]), (banks["val"], wins["val"]),
                      (banks["test"], wins["test"]), device, on_epoch=on_epoch)
    # no live.end(): it would add a summary metrics.json next to the loss TSVs (metrics/train.json has it)
    threshold = validation_threshold(model, banks["val"], wins["val"], t.threshold_metric, t.eval_batch_size)
    print(f"train: decision threshold {threshold:.3f} (chosen on validation by {t.threshold_metric})")
    # the params sections this model depends on (evaluate's do not change it)
    trained_with = {k: v for k, v in to_dict(params).items() if k != "evaluate"}
    save_checkpoint(Path(args.model), model, model_cfg, wins["train"].seq_len, threshold, t.threshold_metric,
                    params=trained_with, commit=git_commit())
    n_trans = int(wins["train"].own.sum()) * t.epochs
    summary = {
        # losses of the kept epoch (the one whose weights are saved), then of the last epoch
        "train_loss": hist.train_loss[hist.best_epoch - 1], "val_loss": hist.val_loss[hist.best_epoch - 1],
        "test_loss": hist.test_loss, "last_train_loss": hist.train_loss[-1], "last_val_loss": hist.val_loss[-1],
        "threshold": threshold, "epochs": t.epochs, "best_epoch": hist.best_epoch,
    }
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(summary, indent=2) + "\n")
    plot_losses(list(range(1, t.epochs + 1)), hist.train_loss, hist.val_loss, Path(args.plots) / "loss.png",
                test=hist.test_loss, kept_epoch=hist.best_epoch)
    print(f"train: {json.dumps(summary)}; {hist.seconds:.0f} s on {device}, {n_trans / hist.seconds:.0f} transitions/s")


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["movies", "windows", "model", "metrics", "plots"]))
