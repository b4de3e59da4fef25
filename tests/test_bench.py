"""The benchmark command on tiny synthetic data: one JSON object with the documented keys."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from meal import bench
from meal.engine.acceleration import try_compile
from meal.errors import ConfigError
from tests.conftest import REPO
from tests.softlabels.toy import SIZE, save_teachers

KEYS = {
    "device",
    "ce_img_per_s",
    "online_img_per_s",
    "cached_img_per_s",
    "cached_vs_ce",
    "online_vs_ce",
    "cached_vs_online",
    "peak_memory_mb",
    "peak_memory_kind",
    "batch_size",
    "timed_steps",
    "threads",
}


def run_bench(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``python -m meal.bench`` and return the one JSON object it prints."""
    proc = subprocess.run(
        [sys.executable, "-m", "meal.bench", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


@pytest.mark.slow
def test_bench_prints_one_json_object(tmp_path: Path, meal_env: dict[str, str]) -> None:
    paths = save_teachers(tmp_path)
    members = ",".join(f"{{arch:fmnist_tiny,checkpoint:'{p}'}}" for p in paths)
    args = [
        "--json",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "student=fmnist_tiny",
        "method=meal_v2",
        "data=synthetic",
        "data.in_channels=1",
        f"data.image_size={SIZE}",
        "data.train_size=64",
        "data.test_size=16",
        "data.batch_size=16",
        "data.mean=[0.5]",
        "data.std=[0.25]",
        "data.augment=pad_crop_flip",
        "data.pad=1",
        "teachers=none",
        f"teachers.members=[{members}]",
        "trainer.progress=off",
    ]
    result = run_bench(args, meal_env)
    assert result.keys() >= KEYS
    assert result["device"].startswith("cpu") and result["peak_memory_kind"] == "max_rss"
    for key in (
        "ce_img_per_s",
        "online_img_per_s",
        "cached_img_per_s",
        "cached_vs_ce",
        "online_vs_ce",
        "peak_memory_mb",
    ):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["timed_steps"] == 3 and result["batch_size"] == 16 and result["threads"] == 1
    assert Path(result["cache_dir"], "COMPLETE").is_file()
    assert Path(result["cache_dir"]).parent == Path(meal_env["MEAL_CACHE"])


def test_bench_refuses_a_method_without_soft_labels() -> None:
    with pytest.raises(ConfigError, match="meal_v1"):
        bench.main(["--json", "method=ce", "teachers=none"])


@pytest.mark.slow
def test_bench_reports_meal_v1_against_ce_with_random_teachers(meal_env: dict[str, str]) -> None:
    args = [
        "--json",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--random-teachers",
        "method=meal_v1_blockwise",
        "method.out_dims=[196,49,9,32,10]",
        "student=fmnist_tiny",
        "teachers=fmnist_pair",
        "data=synthetic",
        "data.in_channels=1",
        "data.image_size=28",
        "data.train_size=64",
        "data.test_size=16",
        "data.batch_size=16",
        "data.mean=[0.5]",
        "data.std=[0.25]",
        "trainer.progress=off",
    ]
    result = run_bench(args, meal_env)
    assert result["method"] == "meal_v1" and result["random_teachers"] is True
    assert result["meal_v1_vs_ce"] == result["online_vs_ce"] > 0
    assert result["meal_v1_img_per_s"] == result["online_img_per_s"] > 0
    assert result["cached_img_per_s"] is None and result["cached_vs_ce"] is None
    assert not list(Path(meal_env["MEAL_ZOO"]).glob("**/*.pt")), "random teachers need no zoo"


# --regimes: the same tiny setting in the fp32_eager and fast regimes. 3 input channels, so that the first
# conv weight's layout (channels_last or not) is unambiguous; no compilation on the CPU.
TINY_RGB = [
    "student=fmnist_tiny",
    "teachers=fmnist_pair",
    "method=meal_v2",
    "data=synthetic",
    "data.in_channels=3",
    f"data.image_size={SIZE}",
    "data.train_size=48",
    "data.test_size=16",
    "data.batch_size=16",
    "data.mean=[0.5,0.5,0.5]",
    "data.std=[0.25,0.25,0.25]",
    "data.augment=pad_crop_flip",
    "data.pad=1",
    "trainer.progress=off",
    "trainer.compile=false",
]


@pytest.mark.slow
def test_bench_regimes_print_one_json_object_with_each_regime(meal_env: dict[str, str]) -> None:
    args = [
        "--json",
        "--regimes",
        "fp32_eager,fast",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--random-teachers",
        *TINY_RGB,
    ]
    result = run_bench(args, meal_env)
    assert result["method"] == "meal_v2" and result["student"] == "fmnist_tiny" and result["batch_size"] == 16
    assert result["device"].startswith("cpu") and result["torch"] and result["modes"] == ["ce", "online", "cached"]
    assert list(result["regimes"]) == ["fp32_eager", "fast"]
    eager, fast = result["regimes"]["fp32_eager"], result["regimes"]["fast"]
    for regime in (eager, fast):
        assert regime.keys() >= KEYS | {"overrides", "student_channels_last", "teacher_dtype"}
        assert regime["timed_steps"] == 3 and regime["autocast"] is None  # auto = fp32 on the CPU
        for mode in result["modes"]:
            assert regime[f"{mode}_img_per_s"] > 0, mode
    for mode in result["modes"]:
        assert result["speedup"][mode] == pytest.approx(
            fast[f"{mode}_img_per_s"] / eager[f"{mode}_img_per_s"], rel=1e-3
        )
    assert "trainer.precision=fp32" in eager["overrides"] and "data.on_device=false" in eager["overrides"]
    assert "trainer.channels_last=true" in fast["overrides"]
    assert "trainer.compile=false" in fast["overrides"] and "trainer.compile=true" not in fast["overrides"]
    assert fast["student_channels_last"] is True and eager["student_channels_last"] is False
    assert fast["student_compiled"] is False and eager["teacher_dtype"] == fast["teacher_dtype"] == "float32"
    assert eager["cache_dir"] == fast["cache_dir"]


@pytest.mark.slow
def test_bench_profile_writes_operator_tables(tmp_path: Path) -> None:
    out, work = tmp_path / "profile", tmp_path / "work"
    cfg = bench.compose_config([*TINY_RGB, f"paths.cache_dir={tmp_path / 'cache'}"], work / "run")
    result = bench.measure(cfg, 2, 1, 1, work, random_teachers=True, profile_dir=out)
    assert (tmp_path / "cache").is_dir()
    assert set(result["profile"]) == {"ce", "online", "cached"}
    for mode, row in result["profile"].items():
        assert row["wall_ms_per_step"] > 0 and "device_busy" not in row
        table = (out / f"{mode}.txt").read_text()
        assert "Self CPU" in table and "aten::conv" in table and "Optimizer.step" in table, mode


def test_bench_refuses_an_unknown_regime() -> None:
    with pytest.raises(ConfigError, match=r"--regimes: unknown regime\(s\): warp .*fp32_eager, fast"):
        bench.main(["--json", "--regimes", "fp32_eager,warp"])
    with pytest.raises(ConfigError, match="--regimes"):
        bench.main(["--json", "--regimes", "fast,fast"])


def test_merge_overrides_lets_the_later_list_win_by_key() -> None:
    regime = ["trainer.precision=fp32", "trainer.compile=true", "data.on_device=false"]
    user = ["student=resnet18", "trainer.compile=false", "++data.on_device=true", "+trainer.new=1"]
    assert bench.merge_overrides(regime, user) == ["trainer.precision=fp32", *user]
    assert bench.merge_overrides(["+a.b=1", "c=2"], ["a.b=3"]) == ["c=2", "a.b=3"]
    assert bench.merge_overrides(["a=1", "~b"], ["b=2", "d=[1,2]"]) == ["a=1", "b=2", "d=[1,2]"]
    assert bench.merge_overrides(["a.b=x=y"], []) == ["a.b=x=y"]
    assert bench.override_key("++trainer.compile=false") == "trainer.compile"
    assert bench.override_key("~trainer.threads") == "trainer.threads"


@pytest.mark.slow
def test_compiled_follows_the_trainers_compile() -> None:
    model = torch.nn.Conv2d(3, 4, 3)
    assert not bench._compiled(model)
    assert try_compile(model, "m") and bench._compiled(model)


# experiments/bench/gpu_table.py


def _gpu_table() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_table", REPO / "experiments" / "bench" / "gpu_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _regime(ce: float, online: float, peak: float) -> dict[str, Any]:
    return {
        "ce_img_per_s": ce,
        "online_img_per_s": online,
        "cached_img_per_s": None,
        "peak_memory_mb": 1.0,
        "ce_peak_memory_mb": peak,
        "online_peak_memory_mb": peak + 100,
        "peak_memory_kind": "torch.cuda.max_memory_allocated",
    }


def test_gpu_table_renders_each_case_and_mode() -> None:
    record = {
        "case": "b",
        "method": "meal_v1",
        "student": "s",
        "teachers": ["t1", "t2"],
        "device": "cuda:0 (NVIDIA H100 80GB HBM3)",
        "torch": "2.5.1",
        "batch_size": 256,
        "timed_steps": 50,
        "statistic": "median step",
        "modes": ["ce", "online"],
        "regimes": {"fp32_eager": _regime(1000.0, 400.0, 2000.0), "fast": _regime(3000.5, 1400.0, 1200.0)},
        "speedup": {"ce": 3.0005, "online": 3.5},
    }
    text = _gpu_table().render_table([record])
    assert text.splitlines()[0].startswith("Device: cuda:0 (NVIDIA H100 80GB HBM3), torch 2.5.1")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    assert rows[0] == [
        "case",
        "mode",
        "img/s (fp32 eager)",
        "img/s (fast)",
        "speed-up",
        "peak MB (fp32 eager)",
        "peak MB (fast)",
    ]
    assert rows[2] == ["b: meal_v1 s <- t1, t2", "ce", "1000.0", "3000.5", "3.00", "2000", "1200"]
    assert rows[3] == ["b: meal_v1 s <- t1, t2", "online", "400.0", "1400.0", "3.50", "2100", "1300"]
    assert len(rows) == 4


def test_gpu_table_shows_how_busy_the_gpu_was_when_profiled() -> None:
    eager, fast = _regime(1000.0, 400.0, 2000.0), _regime(3000.0, 1400.0, 1200.0)
    eager["profile"] = {"ce": {"device_busy": 0.97}, "online": {"device_busy": 0.91}}
    fast["profile"] = {"ce": {"device_busy": 0.62}, "online": {"device_busy": 0.455}}
    record = {
        "case": "a",
        "method": "meal_v2",
        "student": "s",
        "teachers": ["t"],
        "device": "cuda:0 (H100)",
        "torch": "2.11",
        "batch_size": 256,
        "timed_steps": 50,
        "statistic": "median step",
        "modes": ["ce", "online"],
        "regimes": {"fp32_eager": eager, "fast": fast},
        "speedup": None,
    }
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in _gpu_table().render_table([record]).splitlines()
        if line.startswith("|")
    ]
    assert rows[0][-2:] == ["GPU busy (fp32 eager)", "GPU busy (fast)"]
    assert rows[2][-2:] == ["0.97", "0.62"] and rows[3][-2:] == ["0.91", "0.46"]


def test_gpu_table_dry_run_prints_the_documented_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert _gpu_table().main(["--dry-run"]) == 0
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 2 and all(c.startswith("python -m meal.bench --json --random-teachers") for c in commands)
    assert "teachers=cifar_trio" in commands[0] and "paper=meal_cifar10_ensemble" in commands[1]
    readme = re.sub(r" *\\\n *", " ", (REPO / "experiments" / "README.md").read_text())  # join continued lines
    for command in commands:
        assert command in readme, command


@pytest.mark.slow
def test_gpu_table_runs_both_cases_on_tiny_nets(tmp_path: Path, meal_env: dict[str, str]) -> None:
    tiny = [
        "student=fmnist_tiny",
        "teachers=fmnist_pair",
        f"data.image_size={SIZE}",
        "data.pad=1",
        "data.test_size=16",
        "trainer.compile=false",
        "trainer.progress=off",
    ]
    args = [
        "--batch-size",
        "16",
        "--train-size",
        "32",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--out",
        str(tmp_path / "t.md"),
        "--json-out",
        str(tmp_path / "t.jsonl"),
        *tiny,
    ]
    env = {**meal_env, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "bench" / "gpu_table.py"), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == (tmp_path / "t.md").read_text()
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["case"] for r in records] == ["a", "b"]
    assert records[0]["method"] == "meal_v2" and records[1]["method"] == "meal_v1"
    assert all("trainer.compile=false" in r["regimes"]["fast"]["overrides"] for r in records)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| a:") or line.startswith("| b:")]
    assert [row.split("|")[2].strip() for row in rows] == ["ce", "online", "cached", "ce", "online"]
