"""What a training session leaves behind: last.pt's contents (rank 0), a metrics.csv /
TensorBoard row, the loss plot, and at the end the :class:`~stemforge.train.config.TrainResult`.

Each function takes the loop's :class:`~stemforge.train.loop.Session` (the run's state) and writes
through its :class:`~stemforge.train.rundir.RunDir`; the loop (:mod:`stemforge.train.loop`) calls
them at checkpoint, log and validation steps and after its last step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemforge.train.config import TrainResult

if TYPE_CHECKING:
    from stemforge.train.loop import Session


def save_last(s: Session, step: int) -> Path:
    """last.pt, the state to resume from (rank 0); without validation also model.pt, the last
    weights. Returns last.pt's path."""
    if not s.env.is_main:
        return s.rundir.last
    cfg, stepper, schedule = s.cfg, s.stepper, s.schedule
    extra = {
        "train_config": cfg.to_dict(),
        "best_val_loss": schedule.best_val,
        "best_step": schedule.best_step,
        "initial_val_loss": s.initial_val,
        "elapsed_s": s.elapsed(),
        "world_size": s.env.world_size,
        "local_world_size": s.env.local_world_size,
        "data_mode": s.data_mode,
        "schedule": schedule.state_dict(),
        "init": s.spec.init_info,
        "best_sdr": s.best_sdr,
        "best_loss": s.best_loss,
    }
    if s.ema is not None:
        extra["ema"] = s.ema.state_dict()
    rng = {
        "scheme": "per-step: numpy SeedSequence([seed, rank, step, stream]); stream 0 crops, 1 dropout",
        "seed": cfg.seed,
        "dropout_generator": stepper.generator.get_state().cpu(),
    }
    path = s.rundir.save_last(s.spec, s.model, step, stepper.optimizer.state_dict(),
                              stepper.scaler.state_dict() if stepper.scaler.is_enabled() else None, rng, extra)
    if s.valset is None:  # nothing to choose by: model.pt is the last weights, named so
        s.rundir.save_model_last(s.spec, s.eval_model, step)
    return path


def write_metrics(s: Session, step: int, row: dict[str, Any]) -> None:
    """One metrics.csv / TensorBoard row (rank 0); the loss plot is redrawn with each
    validation row."""
    if s.metrics is None:
        return
    row.update(step=step, epoch=step / s.steps_per_epoch, lr=s.schedule.applied, elapsed_s=s.elapsed())
    s.metrics.write(row)
    if "val_loss" in row:
        plot(s)


def plot(s: Session) -> None:
    """loss.png from metrics.csv (rank 0)."""
    if s.metrics is not None:
        s.rundir.draw_loss(f"{s.rundir.path.name}: {s.spec.unet_config.target}, U-Net width {s.spec.unet_config.width:g}")


def finish(s: Session, interrupted: bool, rate: float | None, signal_name: str | None = None) -> TrainResult:
    """After the loop: on Ctrl-C (or SIGTERM), last.pt, the partial metrics row (its loss is the
    result's last train loss, as in metrics.csv) and the plot; the ``done`` event; the
    :class:`TrainResult`."""
    step, cfg, validating = s.step, s.cfg, s.valset is not None
    if interrupted:
        path = save_last(s, step)
        if s.loss_n:
            s.final_train = float(s.loss_sum / s.loss_n)
            write_metrics(s, step, {"train_loss": s.final_train})
        plot(s)
        s.emit("interrupted", step, path=path, message=signal_name or "")
    elif step == s.start_step:  # nothing to do (already at steps): keep the files consistent
        save_last(s, step)
        plot(s)
    s.emit("done", step, train_loss=s.final_train, val_loss=s.final_val, patches_per_s=rate, elapsed_s=s.elapsed())
    return TrainResult(
        out_dir=s.rundir.path,
        step=step,
        total_steps=cfg.steps,
        interrupted=interrupted,
        last_checkpoint=s.rundir.last,
        best_checkpoint=s.rundir.best if validating else None,
        model_path=s.rundir.model,
        model_weights="best" if validating else "last",
        initial_val_loss=s.initial_val,
        best_val_loss=s.best_loss,
        best_step=s.schedule.best_step,
        final_val_loss=s.final_val,
        final_train_loss=s.final_train,
        patches_per_s=rate,
        data_mode=s.data_mode,
        data_message=s.data_message,
        device=str(s.dev),
        world_size=s.env.world_size,
        metrics_path=s.rundir.metrics,
        tensorboard_dir=s.rundir.tensorboard if cfg.tensorboard else None,
        loss_plot=s.rundir.plot,
        stopped_early=s.schedule.stopped_early,
        lr=s.schedule.lr,
        stopped_by=signal_name if interrupted else None,
        select=cfg.select,
        best_sdr=s.best_sdr,
        final_sdr=s.final_sdr,
    )
