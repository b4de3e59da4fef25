"""The benchmark command on tiny synthetic data: one JSON object with the documented keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meal import bench
from meal.errors import ConfigError
from tests.conftest import REPO
from tests.softlabels.toy import SIZE, save_teachers

KEYS = {"device", "ce_img_per_s", "online_img_per_s", "cached_img_per_s", "cached_vs_ce", "online_vs_ce",
        "cached_vs_online", "peak_memory_mb", "peak_memory_kind", "batch_size", "timed_steps", "threads"}


def test_bench_prints_one_json_object(tmp_path: Path, meal_env: dict[str, str]) -> None:
    paths = save_teachers(tmp_path)
    members = ",".join(f"{{arch:fmnist_tiny,checkpoint:'{p}'}}" for p in paths)
    args = ["--json", "--steps", "3", "--warmup", "1", "--threads", "1", "student=fmnist_tiny", "method=meal_v2",
            "data=synthetic", "data.in_channels=1", f"data.image_size={SIZE}", "data.train_size=64",
            "data.test_size=16", "data.batch_size=16", "data.mean=[0.5]", "data.std=[0.25]",
            "data.augment=pad_crop_flip", "data.pad=1", "teachers=none", f"teachers.members=[{members}]",
            "trainer.progress=off"]
    proc = subprocess.run([sys.executable, "-m", "meal.bench", *args], env=meal_env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result.keys() >= KEYS
    assert result["device"].startswith("cpu") and result["peak_memory_kind"] == "max_rss"
    for key in ("ce_img_per_s", "online_img_per_s", "cached_img_per_s", "cached_vs_ce", "online_vs_ce",
                "peak_memory_mb"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["timed_steps"] == 3 and result["batch_size"] == 16 and result["threads"] == 1
    assert Path(result["cache_dir"], "COMPLETE").is_file()
    assert Path(result["cache_dir"]).parent == Path(meal_env["MEAL_CACHE"])


def test_bench_refuses_a_method_without_soft_labels() -> None:
    with pytest.raises(ConfigError, match="meal_v1"):
        bench.main(["--json", "method=ce", "teachers=none"])


def test_bench_reports_meal_v1_against_ce_with_random_teachers(meal_env: dict[str, str]) -> None:
    args = ["--json", "--steps", "2", "--warmup", "1", "--threads", "1", "--random-teachers",
            "method=meal_v1_blockwise", "method.out_dims=[196,49,9,32,10]", "student=fmnist_tiny",
            "teachers=fmnist_pair", "data=synthetic", "data.in_channels=1", "data.image_size=28", "data.train_size=64",
            "data.test_size=16", "data.batch_size=16", "data.mean=[0.5]", "data.std=[0.25]", "trainer.progress=off"]
    proc = subprocess.run([sys.executable, "-m", "meal.bench", *args], env=meal_env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["method"] == "meal_v1" and result["random_teachers"] is True
    assert result["meal_v1_vs_ce"] == result["online_vs_ce"] > 0
    assert result["meal_v1_img_per_s"] == result["online_img_per_s"] > 0
    assert result["cached_img_per_s"] is None and result["cached_vs_ce"] is None
    assert not list(Path(meal_env["MEAL_ZOO"]).glob("**/*.pt")), "random teachers need no zoo"
