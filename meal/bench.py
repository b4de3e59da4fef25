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
was measured in. The trainer's speed settings (``trainer.channels_last``, ``trainer.teacher_precision``,
``trainer.compile``) are applied to the models as in a training run, and reported.

``--profile DIR`` profiles a few more steps of each mode after the timed ones: operator tables in DIR,
and per mode the step's wall time and, on CUDA, how busy the device was (see :func:`profile_modes`).

``--regimes fp32_eager,fast`` measures the same setting in each named regime in turn (a regime is a set
of overrides, see ``REGIMES``; the user's overrides win over a regime's for the same key), each with its
own freshly built pieces, with the regime's ``trainer.channels_last``, ``trainer.teacher_precision`` and
``trainer.compile`` applied to the models as a training run applies them. Prints one JSON object: the
setting, ``regimes`` (name: that regime's result as above, plus ``overrides``, ``autocast``,
``student_channels_last``, ``student_compiled``, ``teacher_dtype``) and ``speedup`` (mode: fast img/s over
fp32_eager img/s; null unless both regimes were measured).
"""

from __future__ import annotations

import argparse
import copy
import gc
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

from meal.core.frozen import weight_dtype
from meal.data import Batch
from meal.engine.acceleration import accelerate, resolve_precision
from meal.engine.schedule import resolve_epochs
from meal.engine.trainer import Trainer
from meal.errors import ConfigError
from meal.methods import Method, build_method, method_class, method_classes
from meal.methods.ce import CEMethodConfig
from meal.softlabels.cli import build_pieces, compose_config, run_cli, setup_logging

log = logging.getLogger("meal.bench")

MODES = ("ce", "online", "cached")


def distillation_methods() -> tuple[str, ...]:
    """The registered methods that use teachers (the benchmark compares them with `method=ce`)."""
    return tuple(name for name, cls in method_classes().items() if cls.uses_teachers)


# Named sets of overrides (--regimes). fp32_eager: the published code's regime (fp32 everywhere, eager,
# images in CPU memory, augmented on the CPU per batch); fast: every speed setting of the trainer.
REGIMES: dict[str, tuple[str, ...]] = {
    "fp32_eager": (
        "trainer.precision=fp32",
        "trainer.teacher_precision=fp32",
        "trainer.channels_last=false",
        "trainer.compile=false",
        "data.on_device=false",
    ),
    "fast": (
        "trainer.precision=auto",
        "trainer.teacher_precision=auto",
        "trainer.channels_last=true",
        "trainer.compile=true",
        "data.on_device=true",
    ),
}
BASELINE, FAST = "fp32_eager", "fast"
PROFILE_STEPS, PROFILE_ROWS = 10, 30
# Fields of a result that describe the setting, the same in every regime.
SETTING_KEYS = (
    "device",
    "method",
    "student",
    "teachers",
    "dataset",
    "train_samples",
    "augment",
    "batch_size",
    "timed_steps",
    "warmup_steps",
    "threads",
    "random_teachers",
    "statistic",
)


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

    def __init__(
        self, name: str, cfg: DictConfig, method: Method, data: Any, run_dir: Path, device: torch.device, epochs: int
    ) -> None:
        self.name = name
        self.method = method
        self.device = device
        self.trainer = Trainer(cfg, method, data, run_dir, device, epochs)
        self.trainer.set_learning_rates(0.0)
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
            self.trainer.train_step(batch)
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


def override_key(override: str) -> str:
    """The config key a Hydra override sets: the text before the first ``=``, without ``+``, ``++`` or ``~``."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """`base` without the keys that `extra` sets, then `extra`: the later list wins, each list's order kept.

    Hydra refuses one key twice in an override list, so a key set in both keeps only `extra`'s override.
    """
    keys = {override_key(o) for o in extra}
    return [o for o in base if override_key(o) not in keys] + list(extra)


def parse_regimes(text: str) -> list[str]:
    """The regime names of ``--regimes`` (comma-separated), checked against ``REGIMES``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in REGIMES]
    if unknown or not names:
        raise ConfigError(
            "--regimes",
            f"unknown regime(s): {', '.join(unknown) or '(none given)'}",
            f"choose from: {', '.join(REGIMES)}",
        )
    if len(set(names)) != len(names):
        raise ConfigError("--regimes", f"a regime is named twice in '{text}'")
    return names


def _first_conv_channels_last(model: torch.nn.Module) -> bool | None:
    """Whether the model's first 4-d weight whose layout is unambiguous is stored channels_last."""
    for param in model.parameters():
        if param.dim() == 4:
            last = param.is_contiguous(memory_format=torch.channels_last)
            if last != param.is_contiguous():
                return last
    return None


def _compiled(model: torch.nn.Module) -> bool:
    """Whether the model still runs compiled: ``trainer.compile`` sets a compiled forward on it, which a
    compile failure replaces by the eager one."""
    return "forward" in model.__dict__


def profile_modes(
    runners: Sequence[Runner], out_dir: Path, device: torch.device, steps: int = PROFILE_STEPS
) -> dict[str, dict[str, float]]:
    """Run `steps` more steps of each mode under ``torch.profiler`` and say where the time went.

    Writes each mode's operator table (top rows by self device time on CUDA, by self CPU time on the
    CPU) to ``<out_dir>/<mode>.txt``. Returns per mode the wall milliseconds per step under the
    profiler and, on CUDA, the device (kernel and copy) milliseconds per step and ``device_busy``,
    their ratio: near 1 the step is bound by the GPU's work, well below 1 by the host (Python, kernel
    launches, synchronisation).
    """
    from torch.profiler import ProfilerActivity, profile

    out_dir.mkdir(parents=True, exist_ok=True)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    summary: dict[str, dict[str, float]] = {}
    for runner in runners:
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            runner.run(steps, timed=False)
            wall_ms = (time.perf_counter() - started) * 1000.0 / steps
        averages = prof.key_averages()
        sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
        (out_dir / f"{runner.name}.txt").write_text(averages.table(sort_by=sort_by, row_limit=PROFILE_ROWS) + "\n")
        row: dict[str, float] = {"wall_ms_per_step": round(wall_ms, 3)}
        if cuda:
            device_ms = sum(getattr(e, "self_device_time_total", 0.0) for e in averages) / 1000.0 / steps
            row |= {"device_ms_per_step": round(device_ms, 3), "device_busy": round(device_ms / wall_ms, 3)}
        summary[runner.name] = row
        log.info("profile of %s: %s (table in %s)", runner.name, row, out_dir / f"{runner.name}.txt")
    return summary


def _method_cfg(cfg: DictConfig, soft_labels: str) -> DictConfig:
    method_cfg = copy.deepcopy(cfg.method)
    with open_dict(method_cfg):
        method_cfg.soft_labels = soft_labels
    return method_cfg


def measure(
    cfg: DictConfig,
    steps: int,
    warmup: int,
    turn: int,
    work_dir: Path,
    random_teachers: bool = False,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Build the modes and time them; returns the JSON-ready result.

    MEAL v1 distils block outputs, which cannot be cached: it is timed online only and reported as
    ``meal_v1_img_per_s`` and ``meal_v1_vs_ce`` as well.

    ``trainer.channels_last``, ``trainer.teacher_precision`` and ``trainer.compile`` are applied to every
    mode's student and (once) to the shared teachers, after the soft-label cache was opened or built from
    the float32 teachers, as ``meal.app.train`` does; the result reports ``autocast``,
    ``student_channels_last``, ``student_compiled`` and ``teacher_dtype``. With `profile_dir`, a few more
    steps of each mode run under ``torch.profiler`` after the timed ones (see :func:`profile_modes`).
    """
    if cfg.method.name not in distillation_methods():
        raise ConfigError(
            "method",
            f"the benchmark compares distillation methods, got '{cfg.method.name}'",
            f"choose one of: {', '.join(distillation_methods())}",
        )
    cacheable = method_class(cfg.method.name).supports_cached_soft_labels
    pieces = build_pieces(cfg, teachers="random" if random_teachers else "zoo")
    modes = MODES if cacheable else MODES[:2]
    assert pieces.student is not None
    data, device, teachers = pieces.data, pieces.device, pieces.teachers
    epochs = resolve_epochs(cfg.trainer, cfg.schedule)
    initial = copy.deepcopy(pieces.student.state_dict())
    seed, classes = int(cfg.seed), int(data.num_classes)

    students: dict[str, torch.nn.Module] = {}

    def student(mode: str) -> torch.nn.Module:
        model = copy.deepcopy(pieces.student)
        model.load_state_dict(initial)
        students[mode] = model
        return model

    online_cfg = _method_cfg(cfg, "online") if cacheable else cfg.method
    methods: dict[str, Method] = {
        "ce": build_method(OmegaConf.structured(CEMethodConfig()), student("ce"), [], classes, seed).to(device),
        "online": build_method(online_cfg, student("online"), teachers, classes, seed).to(device),
    }
    if "cached" in modes:
        methods["cached"] = build_method(_method_cfg(cfg, "cached"), student("cached"), teachers, classes, seed).to(
            device
        )
    started = time.monotonic()
    for method in methods.values():
        method.prepare(data, cfg)
    cache_seconds = time.monotonic() - started
    shared = [(t.name, t.model) for t in teachers]  # as meal.app.train: after the cache was built in float32
    for i, mode in enumerate(modes):
        accelerate(cfg.trainer, students[mode], shared if i == 0 else [], device)
    runners = [Runner(name, cfg, methods[name], data, work_dir / name, device, epochs) for name in modes]
    for runner in runners:
        runner.run(warmup, timed=False)
    for i in range(math.ceil(steps / turn)):  # rotate the order: each mode follows each other one equally often
        for runner in runners[i % len(runners) :] + runners[: i % len(runners)]:
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
    dtype = resolve_precision(cfg.trainer.precision, device)
    layouts = [_first_conv_channels_last(m) for m in students.values()]
    result |= {
        "autocast": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "student_channels_last": None if None in layouts else all(layouts),
        "student_compiled": all(_compiled(m) for m in students.values()),
        "teacher_dtype": str(weight_dtype(teachers[0].model)).removeprefix("torch.") if teachers else None,
    }
    if device.type == "cuda":
        result["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    if profile_dir is not None:
        result["profile"] = profile_modes(runners, profile_dir, device)
    if device.type == "cuda":
        result["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
        result["peak_memory_mb"] = round(max(r.peak_bytes for r in runners) / 2**20, 1)
        result |= {f"{r.name}_peak_memory_mb": round(r.peak_bytes / 2**20, 1) for r in runners}
    else:
        result["peak_memory_kind"] = "max_rss"
        result["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _compose(overrides: Sequence[str], run_dir: Path, threads: int | None) -> DictConfig:
    """The run config of `overrides`, with ``--threads`` (when given) as `trainer.threads`."""
    cfg = compose_config(list(overrides), run_dir)
    if threads:
        with open_dict(cfg):
            cfg.trainer.threads = threads
    return cfg


def _release(device_type: str) -> None:
    """Free the previous regime's models and compiled graphs, so that the next one's peak is its own."""
    gc.collect()
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()
    if device_type == "cuda":
        torch.cuda.empty_cache()


def measure_regimes(
    names: Sequence[str],
    overrides: Sequence[str],
    steps: int,
    warmup: int,
    turn: int,
    work_dir: Path,
    random_teachers: bool = False,
    threads: int | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure the setting in each named regime in turn; returns the combined JSON-ready result."""
    results: dict[str, dict[str, Any]] = {}
    device_type = "cpu"
    for name in names:
        effective = merge_overrides(REGIMES[name], overrides)
        log.info("regime %s: %s", name, " ".join(effective))
        cfg = _compose(effective, work_dir / name / "run", threads)
        profile = None if profile_dir is None else profile_dir / name
        result = measure(cfg, steps, warmup, turn, work_dir / name, random_teachers, profile)
        results[name] = {"overrides": effective, **result}
        device_type = "cuda" if result["device"].startswith("cuda") else "cpu"
        del cfg
        _release(device_type)
    first = results[names[0]]
    combined: dict[str, Any] = {key: first[key] for key in SETTING_KEYS}
    modes = [m for m in MODES if first.get(f"{m}_img_per_s") is not None]
    combined |= {"torch": torch.__version__, "modes": modes, "regimes": results, "speedup": None}
    if BASELINE in results and FAST in results:
        base, fast = results[BASELINE], results[FAST]
        combined["speedup"] = {
            m: round(fast[f"{m}_img_per_s"] / base[f"{m}_img_per_s"], 4)
            for m in modes
            if fast.get(f"{m}_img_per_s") and base.get(f"{m}_img_per_s")
        }
    return combined


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, measure, and print the result."""
    parser = argparse.ArgumentParser(prog="python -m meal.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per mode first")
    parser.add_argument("--turn", type=int, default=1, help="steps a mode runs before the next one takes over")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--random-teachers",
        action="store_true",
        help="teachers with random weights (speed only: no zoo checkpoints needed)",
    )
    parser.add_argument(
        "--regimes",
        metavar="NAMES",
        default=None,
        help=f"measure in each of these comma-separated regimes in turn ({', '.join(REGIMES)}); "
        "the overrides given here win over a regime's for the same key",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"after timing, profile {PROFILE_STEPS} more steps of each mode; operator tables go "
        "to DIR (DIR/<regime>/ with --regimes), a summary into the JSON",
    )
    parser.add_argument("overrides", nargs="*", help="hydra overrides, as for launch.py")
    args = parser.parse_args(argv)
    if min(args.steps, args.turn) <= 0 or args.warmup < 0:
        raise ConfigError("--steps", "steps and turn must be positive, warmup non-negative")
    names = parse_regimes(args.regimes) if args.regimes is not None else None
    with tempfile.TemporaryDirectory(prefix="meal-bench-") as tmp:
        if names is not None:
            result = measure_regimes(
                names,
                args.overrides,
                args.steps,
                args.warmup,
                args.turn,
                Path(tmp),
                args.random_teachers,
                args.threads,
                args.profile,
            )
        else:
            cfg = _compose(args.overrides, Path(tmp) / "run", args.threads)
            result = measure(cfg, args.steps, args.warmup, args.turn, Path(tmp), args.random_teachers, args.profile)
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    else:
        log.info("benchmark:\n%s", "\n".join(f"  {k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_cli(main))
