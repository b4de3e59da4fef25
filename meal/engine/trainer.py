"""The training loop: epochs, LR schedule, mixed precision, evaluation, checkpoints and resume.

The loop is method-agnostic: a :class:`~meal.methods.base.Method` supplies the loss and any extra
optimizers. Everything needed to continue a run exactly (weights, optimizer states, RNG states,
position inside the epoch, running sums) lives in ``checkpoints/last.pt``; a run started in a
directory that holds it resumes from there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from meal.data import DataBundle
from meal.engine.acceleration import resolve_precision
from meal.engine.checkpoint import atomic_write_text, load_checkpoint, remove_stale_temporaries, save_checkpoint
from meal.engine.environment import rng_state, set_rng_state
from meal.engine.evaluate import evaluate_model
from meal.engine.preemption import PreemptionGuard
from meal.engine.progress import Progress
from meal.engine.schedule import build_optimizer, lr_multiplier, set_lr
from meal.errors import CheckpointError, MealError
from meal.objective import objective_metric

if TYPE_CHECKING:  # the engine runs any method; it imports none of them
    from meal.methods.base import Method

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "meal-checkpoint/1"


class NonFiniteLossError(MealError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """Position in the run and the running figures that a resume must restore."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_top1: float = -1.0  # test top-1 at the best evaluation (chosen by `best_metric`)
    best_val_top1: float | None = None  # validation top-1 at the best evaluation, when there is a validation split
    best_epoch: int | None = None
    skipped_steps: int = 0
    train_seconds: float = 0.0
    images_seen: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    last_eval: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Train `method` on `data`, writing metrics and checkpoints into `run_dir`."""

    def __init__(
        self,
        cfg: Any,
        method: Method,
        data: DataBundle,
        run_dir: Path,
        device: torch.device,
        epochs: int,
        tracker: Any = None,
        rank: int = 0,
        world_size: int = 1,
        extra_state: dict[str, Any] | None = None,
        schedule_stretch: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.method = method
        self.data = data
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.device = device
        self.epochs = epochs
        self.tracker = tracker
        self.rank = rank
        self.world_size = world_size
        self.extra_state = extra_state if extra_state is not None else {}
        self.steps_per_epoch = len(data.train)
        self.total_steps = epochs * self.steps_per_epoch
        if self.tcfg.max_steps is not None:
            if self.tcfg.max_steps <= 0:
                raise MealError(f"trainer.max_steps: must be positive or null, got {self.tcfg.max_steps}")
            self.total_steps = min(self.total_steps, self.tcfg.max_steps)
        self.optimizer = build_optimizer(method.student_parameters(), cfg.optim)
        self.extras = method.extra_optimizers()
        self.lr_at = lr_multiplier(cfg.schedule, epochs, schedule_stretch)
        self.autocast_dtype = resolve_precision(self.tcfg.precision, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.state = TrainState()
        # best.pt follows the run's objective: validation top-1 when there is a validation split
        self.best_metric = objective_metric(self.tcfg.objective, cfg.data.val_split if data.val is not None else 0.0)
        self._resume_checked = False
        self.guard = PreemptionGuard()
        self.progress = Progress(self.total_steps, self.tcfg.progress, self.tcfg.log_every_steps, enabled=rank == 0)

    # ----------------------------------------------------------------- checkpoints
    def _all_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.optimizer, **{e.name: e.optimizer for e in self.extras}}

    def save(self, name: str = "last.pt") -> None:
        """Write the full training state atomically (rank 0 only)."""
        if self.rank != 0:
            return
        s = self.state
        payload = {
            "format": CHECKPOINT_FORMAT,
            "epoch": s.epoch,
            "step_in_epoch": s.step_in_epoch,
            "global_step": s.global_step,
            "best_top1": s.best_top1,
            "best_val_top1": s.best_val_top1,
            "best_epoch": s.best_epoch,
            "skipped_steps": s.skipped_steps,
            "train_seconds": s.train_seconds,
            "images_seen": s.images_seen,
            "epoch_sums": s.epoch_sums,
            "epoch_count": s.epoch_count,
            "last_eval": s.last_eval,
            "student": self.method.student.state_dict(),
            "method": self.method.method_state(),
            "optimizers": {k: o.state_dict() for k, o in self._all_optimizers().items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "extra": self.extra_state,
        }
        save_checkpoint(self.ckpt_dir / name, payload)

    def resume(self) -> bool:
        """Load ``checkpoints/last.pt`` when present; return whether the run resumed."""
        self._resume_checked = True
        path = self.ckpt_dir / "last.pt"
        if self.rank == 0:
            for tmp in remove_stale_temporaries(self.ckpt_dir):
                log.info("removed %s, left by a checkpoint write that was cut short", tmp)
        if not path.exists():
            self._truncate_metrics(0)
            return False
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: not a meal training checkpoint (format {ckpt.get('format')!r})")
        try:
            self.method.student.load_state_dict(ckpt["student"])
            self.method.load_method_state(ckpt["method"])
            for name, optimizer in self._all_optimizers().items():
                optimizer.load_state_dict(ckpt["optimizers"][name])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: does not fit this run's model or method ({exc}); start in a new run directory"
            ) from exc
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.state = TrainState(
            epoch=ckpt["epoch"],
            step_in_epoch=ckpt["step_in_epoch"],
            global_step=ckpt["global_step"],
            best_top1=ckpt["best_top1"],
            best_val_top1=ckpt.get("best_val_top1"),
            best_epoch=ckpt.get("best_epoch"),
            skipped_steps=ckpt["skipped_steps"],
            train_seconds=ckpt["train_seconds"],
            images_seen=ckpt["images_seen"],
            epoch_sums=dict(ckpt["epoch_sums"]),
            epoch_count=ckpt["epoch_count"],
            last_eval=dict(ckpt["last_eval"]),
        )
        self.extra_state.update(ckpt.get("extra", {}))
        self._truncate_metrics(self.state.global_step)
        log.info(
            "resumed from %s: epoch %d, step %d of %d",
            path,
            self.state.epoch + 1,
            self.state.global_step,
            self.total_steps,
        )
        return True

    def _truncate_metrics(self, global_step: int) -> None:
        """Drop metric lines written after the checkpoint (they will be written again) and damaged ones."""
        if self.rank != 0 or not self.metrics_path.exists():
            return
        lines = self.metrics_path.read_text().splitlines()
        kept = [ln for ln in lines if (step := _metric_step(ln)) is not None and step <= global_step]
        if len(kept) != len(lines):
            atomic_write_text(self.metrics_path, "".join(ln + "\n" for ln in kept))

    # ----------------------------------------------------------------- the loop
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def set_learning_rates(self, progress_epochs: float) -> float:
        """Set the student's and the methods' optimizers to the schedule's LR at `progress_epochs` (epochs
        done, fractional); return the student's LR."""
        mult = self.lr_at(progress_epochs)
        lr = self.cfg.optim.lr * mult
        set_lr(self.optimizer, lr)
        for extra in self.extras:
            set_lr(extra.optimizer, extra.base_lr * (mult if extra.follow_schedule else 1.0))
        return lr

    def train_step(self, batch: Any) -> dict[str, float] | None:
        """One optimisation step on `batch` (the benchmark drives it without :meth:`fit`); returns the logged
        scalars, or None when the step was skipped (a non-finite loss under ``trainer.nonfinite=skip``)."""
        for optimizer in self._all_optimizers().values():
            optimizer.zero_grad(set_to_none=True)
        if self.tcfg.channels_last and batch.x.dim() == 4:
            batch = batch._replace(x=batch.x.contiguous(memory_format=torch.channels_last))
        with self._autocast():
            out = self.method.training_step(batch, self.state.global_step)
        loss = out.loss
        self.scaler.scale(loss).backward()  # nothing is updated yet: a non-finite loss still skips the step
        logs, finite = self._read_logs(loss, out.logs)
        if not finite:
            return self._handle_nonfinite(logs["loss"])
        stepped = [self.optimizer] + [e.optimizer for e in self.extras if e.stepped_by_engine]
        if self.tcfg.grad_clip is not None:
            for optimizer in stepped:
                self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.student_parameters(), self.tcfg.grad_clip)
        for optimizer in stepped:
            self.scaler.step(optimizer)
        self.scaler.update()
        return logs

    def _read_logs(self, loss: torch.Tensor, logs: dict[str, Any]) -> tuple[dict[str, float], bool]:
        """The step's scalars as floats (one device synchronisation), and whether every rank's loss is finite."""
        keys = ["loss", *logs]
        values = [loss.detach(), *(v.detach() if torch.is_tensor(v) else torch.tensor(v) for v in logs.values())]
        packed = torch.stack([v.to(self.device, torch.float64).reshape(()) for v in values])
        finite = torch.isfinite(packed[:1]).to(torch.float64)
        if self.world_size > 1:  # every rank skips or stops together
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        *numbers, all_finite = torch.cat([packed, finite]).tolist()
        return dict(zip(keys, numbers)), all_finite > 0

    def _handle_nonfinite(self, value: float) -> None:
        s = self.state
        where = f"epoch {s.epoch + 1}, step {s.global_step + 1}"
        if self.tcfg.nonfinite == "skip" and s.skipped_steps < self.tcfg.max_skipped_steps:
            s.skipped_steps += 1
            log.warning("loss is %s at %s: step skipped (%d skipped so far)", value, where, s.skipped_steps)
            return None
        kept = self.ckpt_dir / "last.pt"
        kept_msg = f"the last good checkpoint {kept} is kept" if kept.exists() else "no checkpoint was written yet"
        if self.tcfg.nonfinite == "skip":
            again = (
                f"restart the run in the same directory with a larger trainer.max_skipped_steps "
                f"({s.skipped_steps} skipped so far)"
            )
        else:
            again = "restart the run in the same directory with trainer.nonfinite=skip to skip such steps"
        raise NonFiniteLossError(
            f"loss became {value} at {where}; {kept_msg} ({again}, or start a new run with a lower optim.lr "
            "or with trainer.grad_clip set)"
        )

    def _log_step(self, logs: dict[str, float], lr: float, batch_size: int) -> None:
        s = self.state
        for key, value in logs.items():
            s.epoch_sums[key] = s.epoch_sums.get(key, 0.0) + value
        s.epoch_count += 1
        s.images_seen += batch_size * self.world_size
        if self.tracker is not None and s.global_step % max(self.tcfg.log_every_steps, 1) == 0:
            self.tracker.log(
                {f"train/{k}": v for k, v in logs.items()} | {"train/lr": lr, "epoch": s.epoch}, step=s.global_step
            )
        self.progress.update(s.global_step, s.epoch, self.epochs, {"loss": logs["loss"], "lr": lr})

    def _end_epoch(self, lr: float, epoch_seconds: float, epoch_images: int) -> dict[str, Any]:
        s = self.state
        final = s.epoch + 1 == self.epochs or s.global_step >= self.total_steps
        metrics: dict[str, Any] = {"epoch": s.epoch + 1, "step": s.global_step, "lr": lr}
        sums, count = dict(s.epoch_sums), float(s.epoch_count)
        if self.world_size > 1:  # every rank's losses, averaged: the same figures as one process
            keys = sorted(sums)
            packed = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(packed)
            sums = dict(zip(keys, packed[:-1].tolist()))
            count = packed[-1].item()
        metrics |= {f"train_{k}": v / max(count, 1.0) for k, v in sums.items()}
        metrics["img_per_s"] = epoch_images / max(epoch_seconds, 1e-9)
        if self.rank == 0 and ((s.epoch + 1) % max(self.tcfg.eval_every, 1) == 0 or final):
            test = evaluate_model(self.method.student, self.data.test)
            metrics |= {"top1": test["top1"], "top5": test["top5"], "test_loss": test["loss"]}
            s.last_eval = {"top1": test["top1"], "top5": test["top5"]}
            if self.data.val is not None:
                val = evaluate_model(self.method.student, self.data.val)
                metrics |= {"val_top1": val["top1"], "val_top5": val["top5"]}
                s.last_eval |= {"val_top1": val["top1"], "val_top5": val["top5"]}
        if s.skipped_steps:
            metrics["skipped_steps"] = s.skipped_steps
        return metrics

    def _record(self, metrics: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(metrics, sort_keys=True) + "\n")
        if self.tracker is not None:
            self.tracker.log(
                {f"epoch/{k}": v for k, v in metrics.items() if k not in ("epoch", "step")}
                | {"epoch": metrics["epoch"]},
                step=metrics["step"],
            )
        shown = " ".join(
            f"{k}={v:.4g}"
            for k, v in metrics.items()
            if k in ("train_loss", "top1", "top5", "lr", "img_per_s") and isinstance(v, float)
        )
        log.info("epoch %d/%d %s", metrics["epoch"], self.epochs, shown)

    def fit(self) -> TrainState:
        """Train until the last epoch (or `trainer.max_steps`), resuming first when possible."""
        if not self._resume_checked:
            self.resume()
        s = self.state
        self.guard.install()
        self.progress.begin(s.global_step)
        try:
            while s.epoch < self.epochs and s.global_step < self.total_steps:
                self.data.train.set_epoch(s.epoch)
                self.method.train()
                started, epoch_images = time.monotonic(), 0
                lr = self.set_learning_rates(s.epoch + s.step_in_epoch / self.steps_per_epoch)
                for batch in self.data.train.iterate(s.step_in_epoch):
                    lr = self.set_learning_rates(s.epoch + s.step_in_epoch / self.steps_per_epoch)
                    logs = self.train_step(batch)
                    s.global_step += 1
                    s.step_in_epoch += 1
                    if logs is not None:
                        self._log_step(logs, lr, int(batch.y.shape[0]))
                        epoch_images += int(batch.y.shape[0]) * self.world_size
                    if self._preempted(started):
                        return s
                    every = self.tcfg.ckpt_every_steps
                    if every and s.global_step % every == 0 and s.step_in_epoch < self.steps_per_epoch:
                        self._checkpoint_now(started)
                    if s.global_step >= self.total_steps:
                        break
                self.progress.end_epoch()
                if s.step_in_epoch < self.steps_per_epoch:  # trainer.max_steps reached inside the epoch
                    self._checkpoint_now(started)
                    s.train_seconds += time.monotonic() - started
                    return s
                seconds = time.monotonic() - started
                s.train_seconds += seconds
                metrics = self._end_epoch(lr, seconds, epoch_images)
                self._record(metrics)
                s.epoch += 1
                s.step_in_epoch = 0
                s.epoch_sums, s.epoch_count = {}, 0
                improved = self._update_best(metrics)
                if improved and self.tcfg.keep_best:  # before last.pt: a resume from last.pt never skips it
                    self.save("best.pt")
                self.save()
            return s
        finally:
            self.guard.uninstall()

    def _update_best(self, metrics: dict[str, Any]) -> bool:
        """Record this evaluation as the best one when it beats the best so far on `best_metric`."""
        s = self.state
        score = metrics.get(self.best_metric)
        best = s.best_val_top1 if self.best_metric == "val_top1" else s.best_top1
        if score is None or (best is not None and score <= best):
            return False
        s.best_top1, s.best_val_top1, s.best_epoch = metrics["top1"], metrics.get("val_top1"), metrics["epoch"]
        return True

    def _checkpoint_now(self, started: float) -> None:
        elapsed = time.monotonic() - started
        self.state.train_seconds += elapsed
        self.save()
        self.state.train_seconds -= elapsed

    def _stop_requested(self) -> bool:
        """Whether any rank received a termination signal (all ranks agree on the answer)."""
        if self.world_size == 1:
            return self.guard.requested
        flag = torch.tensor([1.0 if self.guard.requested else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def _preempted(self, started: float) -> bool:
        if not self._stop_requested():
            return False
        self._checkpoint_now(started)
        log.warning("checkpoint saved at step %d after a termination signal", self.state.global_step)
        if self.tracker is not None:
            self.tracker.mark_preempting()
            # The requeue stops every process of the job, W&B's service too: close the run before it.
            self.tracker.finish(exit_code=128 + (self.guard.signum or 0))
        self.guard.hand_over()
        return True


def _metric_step(line: str) -> int | None:
    """The step of one metrics.jsonl line; None for a blank or damaged line (a write cut short)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return int(row.get("step", 0)) if isinstance(row, dict) else None


def images_per_second(state: TrainState) -> float:
    """Average training throughput over the whole run."""
    return state.images_seen / state.train_seconds if state.train_seconds > 0 else math.nan
