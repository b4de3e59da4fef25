"""Training throughput of plain CE, online distillation and cached-soft-label distillation.

    python -m meal.bench --json student=fmnist_tiny teachers=fmnist_trio method=meal_v2 [overrides]

In one process, with the same student architecture and initial weights, batch size, data and device,
this times full training steps (fetching the batch, forward, loss, backward, every optimizer step:
the trainer's own step function) of

(a) ``ce``: the student with cross-entropy on the labels (``method=ce``);
(b) ``online``: the configured distillation method (``meal_v2`` or ``kd``) running its teachers;
(c) ``cached``: the same method with ``soft_labels=cached`` (the cache is opened, or built, first;
    building is not timed). ``method=meal_v1`` distils block outputs, which are not cached: it is timed
    online and reported as ``meal_v1_img_per_s`` and ``meal_v1_vs_ce``.

``--random-teachers`` builds the teachers with random weights: throughput does not depend on them, and
no zoo checkpoints are needed (e.g. the published CIFAR settings on synthetic 32x32 data).

After `--warmup` untimed steps of each, the modes take turns every `--turn` steps (default: every
step), in an order that rotates each turn, until each has run `--steps` timed steps, so load from
other processes and cache effects of the previous step fall on all three alike. A mode's images/s
is the batch size over its median step time (the mean-based figure is reported beside it). Prints
one JSON object: ``device``, ``ce_img_per_s``, ``online_img_per_s``, ``cached_img_per_s``,
``cached_vs_ce``, ``online_vs_ce``, ``cached_vs_online`` and the peak memory (CPU: the process's
max RSS from ``resource``; CUDA: ``torch.cuda.max_memory_allocated`` per mode), with the setting it
was measured in.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from meal.config.schema import CEMethodConfig
from meal.data import Batch
from meal.engine.schedule import resolve_epochs
from meal.engine.trainer import Trainer
from meal.errors import ConfigError
from meal.methods import Method, build_method
from meal.softlabels.cli import build_pieces, compose_config, run_cli, setup_logging

log = logging.getLogger("meal.bench")

MODES = ("ce", "online", "cached")
CACHED_METHODS = ("meal_v2", "kd")
DISTILLATION_METHODS = (*CACHED_METHODS, "meal_v1")


def device_name(device: torch.device) -> str:
    """A readable description of the device."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def batches(loader: Any) -> Iterator[Batch]:
    """The loader's first epoch, repeated forever."""
    while True:
        yield from loader.iterate(0)


class Runner:
    """One mode: a method around its own copy of the student, a trainer and a batch stream."""

    def __init__(self, name: str, cfg: DictConfig, method: Method, data: Any, run_dir: Path,
                 device: torch.device, epochs: int) -> None:
        self.name = name
        self.method = method
        self.device = device
        self.trainer = Trainer(cfg, method, data, run_dir, device, epochs)
        self.trainer._set_learning_rates(0.0)
        self.stream = batches(data.train)
        self.step_seconds: list[float] = []
        self.step_images: list[int] = []
        self.peak_bytes = 0
        method.train()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, steps: int, timed: bool) -> None:
        """Run `steps` training steps, recording each one's wall time and images when `timed`."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        for _ in range(steps):
            self._sync()
            started = time.perf_counter()
            batch = next(self.stream)
            self.trainer._train_step(batch)
            self._sync()
            if timed:
                self.step_seconds.append(time.perf_counter() - started)
                self.step_images.append(int(batch.y.shape[0]))
        if self.device.type == "cuda":
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))

    @property
    def img_per_s(self) -> float:
        """Images per second of the median step (robust to other processes' bursts)."""
        return statistics.median(i / s for i, s in zip(self.step_images, self.step_seconds))

    @property
    def img_per_s_mean(self) -> float:
        """All timed images over all timed seconds."""
        return sum(self.step_images) / sum(self.step_seconds)


def _method_cfg(cfg: DictConfig, soft_labels: str) -> DictConfig:
    method_cfg = copy.deepcopy(cfg.method)
    with open_dict(method_cfg):
        method_cfg.soft_labels = soft_labels
    return method_cfg


def measure(cfg: DictConfig, steps: int, warmup: int, turn: int, work_dir: Path,
            random_teachers: bool = False) -> dict[str, Any]:
    """Build the modes and time them; returns the JSON-ready result.

    MEAL v1 distils block outputs, which cannot be cached: it is timed online only and reported as
    ``meal_v1_img_per_s`` and ``meal_v1_vs_ce`` as well.
    """
    if cfg.method.name not in DISTILLATION_METHODS:
        raise ConfigError("method", f"the benchmark compares distillation methods, got '{cfg.method.name}'",
                          f"choose one of: {', '.join(DISTILLATION_METHODS)}")
    pieces = build_pieces(cfg, random_teachers=random_teachers)
    modes = MODES if cfg.method.name in CACHED_METHODS else MODES[:2]
    assert pieces.student is not None
    data, device, teachers = pieces.data, pieces.device, pieces.teachers
    epochs = resolve_epochs(cfg.trainer, cfg.schedule)
    initial = copy.deepcopy(pieces.student.state_dict())
    seed, classes = int(cfg.seed), int(data.num_classes)

    def student() -> torch.nn.Module:
        model = copy.deepcopy(pieces.student)
        model.load_state_dict(initial)
        return model

    online_cfg = _method_cfg(cfg, "online") if cfg.method.name in CACHED_METHODS else cfg.method
    methods: dict[str, Method] = {
        "ce": build_method(OmegaConf.structured(CEMethodConfig()), student(), [], classes, seed).to(device),
        "online": build_method(online_cfg, student(), teachers, classes, seed).to(device),
    }
    if "cached" in modes:
        methods["cached"] = build_method(_method_cfg(cfg, "cached"), student(), teachers, classes, seed).to(device)
    started = time.monotonic()
    for method in methods.values():
        method.prepare(data, cfg)
    cache_seconds = time.monotonic() - started
    runners = [Runner(name, cfg, methods[name], data, work_dir / name, device, epochs) for name in modes]
    for runner in runners:
        runner.run(warmup, timed=False)
    for i in range(math.ceil(steps / turn)):  # rotate the order: each mode follows each other one equally often
        for runner in runners[i % len(runners):] + runners[: i % len(runners)]:
            runner.run(turn, timed=True)
    rate = {r.name: r.img_per_s for r in runners}
    cached = methods["cached"].soft_labels.cached if "cached" in methods else None
    result: dict[str, Any] = {
        "device": device_name(device),
        "method": cfg.method.name,
        "student": cfg.student.arch,
        "teachers": [t.name for t in teachers],
        "dataset": cfg.data.name,
        "train_samples": data.train.num_samples,
        "augment": cfg.data.augment,
        "batch_size": int(cfg.data.batch_size),
        "timed_steps": len(runners[0].step_seconds),
        "warmup_steps": warmup,
        "threads": torch.get_num_threads(),
        "ce_img_per_s": round(rate["ce"], 2),
        "online_img_per_s": round(rate["online"], 2),
        "cached_img_per_s": round(rate["cached"], 2) if "cached" in rate else None,
        "cached_vs_ce": round(rate["cached"] / rate["ce"], 4) if "cached" in rate else None,
        "online_vs_ce": round(rate["online"] / rate["ce"], 4),
        "cached_vs_online": round(rate["cached"] / rate["online"], 4) if "cached" in rate else None,
        "random_teachers": random_teachers,
        "statistic": "median step",
        **{f"{r.name}_img_per_s_mean": round(r.img_per_s_mean, 2) for r in runners},
        "cache_dir": str(cached.path) if cached is not None else None,
        "cache_open_s": round(cache_seconds, 3),
    }
    if cfg.method.name == "meal_v1":
        result["meal_v1_img_per_s"] = result["online_img_per_s"]
        result["meal_v1_vs_ce"] = result["online_vs_ce"]
    if device.type == "cuda":
        result["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
        result["peak_memory_mb"] = round(max(r.peak_bytes for r in runners) / 2**20, 1)
        result |= {f"{r.name}_peak_memory_mb": round(r.peak_bytes / 2**20, 1) for r in runners}
    else:
        result["peak_memory_kind"] = "max_rss"
        result["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, measure, and print the result."""
    parser = argparse.ArgumentParser(prog="python -m meal.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per mode first")
    parser.add_argument("--turn", type=int, default=1, help="steps a mode runs before the next one takes over")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--random-teachers", action="store_true",
                        help="teachers with random weights (speed only: no zoo checkpoints needed)")
    parser.add_argument("overrides", nargs="*", help="hydra overrides, as for launch.py")
    args = parser.parse_args(argv)
    if min(args.steps, args.turn) <= 0 or args.warmup < 0:
        raise ConfigError("--steps", "steps and turn must be positive, warmup non-negative")
    with tempfile.TemporaryDirectory(prefix="meal-bench-") as tmp:
        cfg = compose_config(args.overrides, Path(tmp) / "run")
        if args.threads:
            with open_dict(cfg):
                cfg.trainer.threads = args.threads
        result = measure(cfg, args.steps, args.warmup, args.turn, Path(tmp), args.random_teachers)
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    else:
        log.info("benchmark:\n%s", "\n".join(f"  {k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_cli(main))
