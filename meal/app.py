"""One run, from a composed config to result.json: data, models, teachers, method, trainer, tracking."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from meal.config import register
from meal.config.experiments import check_experiment_choices
from meal.config.schema import TeachersConfig
from meal.config.writable import check_writable
from meal.core.result import COMPLETED, RESULT_FILE, STOPPED, Result
from meal.data import DataBundle
from meal.engine import distributed
from meal.engine.environment import seed_everything
from meal.engine.evaluate import evaluate_teachers
from meal.engine.schedule import resolve_epochs
from meal.engine.trainer import Trainer, images_per_second
from meal.entry import INTERRUPTED, USER_ERROR, error_line
from meal.errors import ConfigError, ResultError
from meal.evaluation import evaluate_classifier
from meal.methods.ce import CEMethodConfig
from meal.models import count_parameters
from meal.objective import check_search_objective, current_sweeper, objective_metric
from meal.pieces import build_pieces, build_run_method, build_student
from meal.preflight import check_before_work
from meal.rundir import check_config, hold_run_dir, write_config, write_result
from meal.teachers import export_to_zoo, recipe_of_run, zoo_entry
from meal.tracking import build_tracker
from meal.tracking.naming import run_group, run_name

log = logging.getLogger(__name__)
ZOO_FIX = "point paths.zoo (or $MEAL_ZOO) at a folder this user can write"


def main(cfg: DictConfig) -> float:
    """Entry used by launch.py: run; a user error ends in one line and exit status 2, Ctrl-C in status 130."""
    try:
        return run(cfg)
    except KeyboardInterrupt:
        log.warning("interrupted")
        raise SystemExit(INTERRUPTED) from None
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        log.error("error: %s", line)
        raise SystemExit(USER_ERROR) from None


def run(cfg: DictConfig) -> float:
    """Train the configured student and return the sweep objective: its final validation top-1 when
    `data.val_split` > 0, else its final test top-1 (`trainer.objective`, see :mod:`meal.objective`).

    A search (an optimising sweeper) whose objective would be the test set is refused unless
    `trainer.objective=test`. NaN when the run never evaluated (stopped by `trainer.max_steps` before its
    first epoch ended).
    """
    register()
    if HydraConfig.initialized():  # an unknown paper=/ablation=/zoo= option is skipped by Hydra: refuse it
        check_experiment_choices(HydraConfig.get().runtime.choices)
    metric = check_search_objective(cfg, current_sweeper())
    result = train(cfg, Path(cfg.paths.output_dir))
    value = result.get(metric)
    return float(value) if value is not None else math.nan


def train_missing_teacher(cfg: DictConfig, member: Any, target: Path) -> None:
    """Train one missing zoo teacher as an ordinary `method=ce` run in the zoo's runs/ folder."""
    t = cfg.teachers.training
    teacher_cfg = copy.deepcopy(cfg)
    with open_dict(teacher_cfg):
        teacher_cfg.method = OmegaConf.structured(CEMethodConfig())
        teacher_cfg.teachers = OmegaConf.structured(TeachersConfig())
        teacher_cfg.student.arch = member.arch
        teacher_cfg.student.pretrained = None
        teacher_cfg.student.taps = None
        teacher_cfg.seed = member.seed
        teacher_cfg.trainer.epochs = t.epochs
        teacher_cfg.trainer.max_steps = None
        teacher_cfg.trainer.export_to_zoo = True
        teacher_cfg.trainer.zoo_recipe = t.recipe
        teacher_cfg.optim.name = t.optim
        teacher_cfg.optim.lr = t.lr
        teacher_cfg.schedule.name = t.schedule
        teacher_cfg.data.train_subset = t.train_subset
    run_dir = target.parent / "runs" / target.stem
    check_writable("paths.zoo", run_dir, ZOO_FIX)
    train(teacher_cfg, run_dir, job_type="teacher", wait_for_dir=True)  # a parallel job may be training it


def _final_figures(
    cfg: DictConfig, state: Any, epochs: int, method: Any, teachers: list, data: DataBundle
) -> dict[str, Any]:
    """Calibration of the finished student on the test set and, for distillation, its agreement with the teachers,
    as the :class:`Result` fields ``ece``, ``nll``, ``ensemble_agreement`` and ``teacher_agreement``.

    None (and no agreement) for a run stopped before its end: its weights are not the evaluated ones.
    """
    figures: dict[str, Any] = {"ece": None, "nll": None, "ensemble_agreement": None, "teacher_agreement": {}}
    if state.epoch < epochs:
        return figures
    found = evaluate_classifier(method.student, data.test, data.num_classes, [(t.name, t.model) for t in teachers])
    figures |= {key: found[key] for key in figures if key in found}
    return figures


def _result(
    cfg: DictConfig,
    state: Any,
    epochs: int,
    method: Any,
    teachers: list,
    teacher_eval: dict,
    wall: float,
    tracker: Any,
    figures: dict[str, Any],
    world_size: int,
) -> Result:
    """The run's :class:`Result`; `figures` are :func:`_final_figures`' fields."""
    metric = objective_metric(cfg.trainer.objective, cfg.data.val_split)
    return Result(
        method=cfg.method.name,
        student=cfg.student.arch,
        teachers=[t.name for t in teachers],
        teacher_set=cfg.teachers.name if teachers else None,
        dataset=cfg.data.name,
        seed=int(cfg.seed),
        epochs=state.epoch,
        steps=state.global_step,
        top1=state.last_eval.get("top1"),
        top5=state.last_eval.get("top5"),
        val_top1=state.last_eval.get("val_top1"),
        val_top5=state.last_eval.get("val_top5"),
        best_top1=state.best_top1,
        best_val_top1=state.best_val_top1,
        best_epoch=state.best_epoch,
        best_metric=metric,
        objective=metric,
        teacher_top1=teacher_eval.get("teacher_top1", {}),
        ensemble_top1=teacher_eval.get("ensemble_top1"),
        params=count_parameters(method.student),
        img_per_s=images_per_second(state),
        wall_s=wall,
        train_s=state.train_seconds,
        skipped_steps=state.skipped_steps,
        wandb_id=getattr(tracker, "run_id", None),
        experiment=cfg.experiment,
        status=COMPLETED if state.epoch >= epochs else STOPPED,
        **figures,
        world_size=world_size,
    )


def _kept_from_earlier_start(run_dir: Path, result: Result) -> Result:
    """`result` for a start that took no training step (a finished run started again, e.g. by re-running its
    sweep): the run's wall time is the one its result.json recorded, not this start's seconds, and a figure
    this start cannot know (a checkpoint from an older meal lacks it) keeps its recorded value."""
    try:
        earlier = Result.read(run_dir / RESULT_FILE)
    except (OSError, ResultError):
        return result
    if earlier.steps != result.steps:
        return result
    kept = result.with_missing_from(earlier)
    if earlier.wall_s is not None:
        kept.wall_s = earlier.wall_s
    return kept


def _print_table(result: Result) -> None:
    rows = [(f"student {result.student}", result.top1, result.top5)]
    rows += [(f"teacher {name}", top1, None) for name, top1 in result.teacher_top1.items()]
    if result.ensemble_top1 is not None:
        rows.append(("ensemble (mean softmax)", result.ensemble_top1, None))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'model'.ljust(width)}  top1    top5", f"{'-' * width}  ------  ------"]
    for name, top1, top5 in rows:
        cells = [f"{v:6.2f}" if v is not None else "     -" for v in (top1, top5)]
        lines.append(f"{name.ljust(width)}  {cells[0]}  {cells[1]}")
    log.info("results (%s, %s):\n%s", result.method, result.dataset, "\n".join(lines))


def _exported_by(target: Path, run_dir: Path) -> bool:
    """True when the zoo entry's sidecar says this run directory exported it (a re-run of a finished run)."""
    try:
        info = json.loads(target.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(info, dict) and info.get("run_dir") == str(run_dir)


def _check_zoo_target(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The zoo entry this run exports to; None when it exports nothing or already exported it."""
    if not cfg.trainer.export_to_zoo:
        return None
    if cfg.method.name != "ce":
        raise ConfigError("trainer.export_to_zoo", "only method=ce runs export teachers to the zoo")
    target = zoo_entry(Path(cfg.paths.zoo), cfg.data.name, cfg.student.arch, int(cfg.seed), cfg.trainer.zoo_recipe)
    if target.exists() and _exported_by(target, run_dir):
        log.info("zoo entry %s was exported by this run already", target)
        return None
    if target.exists():
        raise ConfigError(
            "trainer.export_to_zoo",
            f"zoo entry {target} exists and is never overwritten",
            "delete it first, or train with another seed",
        )
    check_writable("paths.zoo", target.parent, ZOO_FIX)
    return target


def train(cfg: DictConfig, run_dir: Path, job_type: str = "train", wait_for_dir: bool = False) -> Result:
    """Run one training job in `run_dir` (resuming it when it holds a checkpoint), holding the directory's lock,
    and return its :class:`Result` (what it wrote to result.json; every rank returns rank 0's).

    A directory another process holds is refused, or with `wait_for_dir` waited for (the run then resumes,
    or just reports, what that process left).
    """
    started = time.monotonic()
    check_before_work(cfg)  # config, student and teacher structure: before any data, teacher, lock or file
    objective_metric(cfg.trainer.objective, cfg.data.val_split)  # a bad objective is refused before any work
    dist = distributed.setup()
    with hold_run_dir(run_dir, rank0=dist.rank == 0, wait=wait_for_dir):
        return _train(cfg, run_dir, job_type, started, dist)


def _train(cfg: DictConfig, run_dir: Path, job_type: str, started: float, dist: distributed.DistInfo) -> Result:
    zoo_target = _check_zoo_target(cfg, run_dir)
    if dist.rank == 0:
        check_config(cfg, run_dir)  # a restart with another config is refused before any work
    pieces = build_pieces(cfg, dist=dist, train_missing=lambda m, p: train_missing_teacher(cfg, m, p), checked=True)
    device, data, student, teachers = pieces.device, pieces.data, pieces.student, pieces.teachers
    method = build_run_method(cfg, pieces)
    method_type = type(method)
    if dist.world_size > 1:
        method.distribute(distributed.data_parallel_wrapper(dist))
        seed_everything(int(cfg.seed) * 1000 + dist.rank)  # per-rank streams for dropout and the like
    epochs = resolve_epochs(cfg.trainer, cfg.schedule)
    stretch = method_type.schedule_stretch(cfg.method, len(teachers))
    epochs *= stretch  # the schedule plays `stretch` times slower over the longer run
    if dist.rank == 0:
        write_config(cfg, run_dir)  # every check has passed: only now does the directory record this run
    tracker = build_tracker(
        cfg.logger,
        run_dir,
        OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        name=run_name(cfg),
        group=run_group(cfg, run_dir),
        job_type=cfg.logger.job_type or job_type,
        tags=[cfg.method.name, cfg.data.name],
        rank=dist.rank,
    )
    extra: dict[str, Any] = {}
    exit_code = 1
    try:
        trainer = Trainer(
            cfg,
            method,
            data,
            run_dir,
            device,
            epochs,
            tracker=tracker,
            rank=dist.rank,
            world_size=dist.world_size,
            extra_state=extra,
            schedule_stretch=stretch,
        )
        trainer.resume()
        resumed_at = trainer.state.global_step
        if teachers and "teacher_eval" not in extra and dist.rank == 0:
            per_teacher, ensemble = evaluate_teachers([(t.name, t.model) for t in teachers], data.test)
            extra["teacher_eval"] = {"teacher_top1": per_teacher, "ensemble_top1": ensemble}
            log.info("teachers: %s, ensemble %.2f", ", ".join(f"{k} {v:.2f}" for k, v in per_teacher.items()), ensemble)
        state = trainer.fit()
        if dist.rank != 0:
            exit_code = 0
            return distributed.from_rank0(None)
        wall = time.monotonic() - started  # the wall time leaves out the final figures' evaluation
        figures = _final_figures(cfg, state, epochs, method, teachers, data)
        teacher_eval = extra.get("teacher_eval", {})
        result = _result(cfg, state, epochs, method, teachers, teacher_eval, wall, tracker, figures, dist.world_size)
        if state.global_step == resumed_at:  # a start that trained nothing: keep what the run recorded
            result = _kept_from_earlier_start(run_dir, result)
        write_result(run_dir, result)
        tracker.summary(result.to_json_dict())  # every field, lists and nulls included: W&B stores them as JSON
        _print_table(result)
        if zoo_target is not None and result.completed:
            export_to_zoo(
                student.net if hasattr(student, "net") else student,
                zoo_target,
                {
                    "arch": cfg.student.arch,
                    "dataset": cfg.data.name,
                    "classes": data.num_classes,
                    "in_channels": data.in_channels,
                    "image_size": data.image_size,
                    "seed": int(cfg.seed),
                    "top1": result.top1,
                    "top5": result.top5,
                    "epochs": state.epoch,
                    "recipe": recipe_of_run(cfg),
                    "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                    "run_dir": str(run_dir),
                },
            )
        exit_code = 0
        return distributed.from_rank0(result) if dist.world_size > 1 else result
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else 1
        raise
    finally:
        tracker.finish(exit_code=exit_code)
        distributed.teardown(dist, barrier=exit_code == 0)


__all__ = ["build_student", "main", "run", "train", "train_missing_teacher"]  # build_student: from meal.pieces
