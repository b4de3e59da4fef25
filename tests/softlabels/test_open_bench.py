"""The open-time benchmark builds a cache of the asked shape and reports each way of opening it."""

from __future__ import annotations

import json

import pytest

from meal.softlabels.open_bench import main


def test_open_bench_reports_the_cost_of_the_checks(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert (
        main(["--samples", "3000", "--slots", "4", "--dtype", "float32", "--repeats", "2", "--dir", str(tmp_path)]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    values_bytes = 3000 * 4 * 2 * 10 * 4
    assert values_bytes < result["bytes"] < values_bytes + 4096  # the tensor and torch.save's small zip overhead
    assert result["blocks"] == 1 and result["block_bytes"] == 4 << 20
    for way in ("in_memory", "mmap"):
        figures = result[way]
        assert set(figures) == {"load_s", "verify_s", "open_s", "open_vs_load"}
        assert all(v > 0 for v in figures.values())
    assert result["verify_gb_per_s"] > 0
    assert list(tmp_path.iterdir()) == [], "the benchmark's cache is removed"
