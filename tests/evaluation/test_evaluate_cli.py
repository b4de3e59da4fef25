"""`python -m meal.evaluate` on a tiny real run directory: every figure recomputed by hand from the saved
weights, the same figures in result.json, the table, overrides and one-line errors."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from meal.data import build_data
from meal.entry import USER_ERROR, run_entry_point
from meal.evaluate import main
from meal.evaluation.target import run_config
from meal.models import build_model
from meal.teachers import freeze
from tests.evaluation.conftest import FinishedRun

# every test reads the run of the kd_run fixture: a real KD run of a few epochs
pytestmark = pytest.mark.slow


def hand_figures(run: FinishedRun) -> dict:
    """Top-1, NLL, 15-bin ECE and agreement, computed sample by sample from the run's final weights."""
    cfg = run_config(run.run_dir)
    data = build_data(cfg.data, Path("/nonexistent"), 0, torch.device("cpu"))
    student = build_model("fmnist_tiny", 10, 1, 12, taps=[]).eval()
    student.load_state_dict(torch.load(run.run_dir / "checkpoints" / "last.pt", weights_only=False)["student"])
    teachers = [freeze(build_model("fmnist_tiny", 10, 1, 12, pretrained=str(p))) for p in run.teacher_files]
    rows = []
    with torch.no_grad():
        for batch in data.test:
            s = student(batch.x).double().softmax(1)
            t = [m(batch.x).double().softmax(1) for m in teachers]
            for i in range(batch.y.numel()):
                rows.append((s[i].tolist(), [p[i].tolist() for p in t], int(batch.y[i])))
    n = len(rows)
    argmax = lambda v: max(range(len(v)), key=v.__getitem__)  # noqa: E731
    bins = [[0, 0.0, 0.0] for _ in range(15)]  # count, confidence sum, correct sum
    top1 = nll = 0.0
    agree = [0, 0]
    ensemble_agree = 0
    for s, t, y in rows:
        pred, conf = argmax(s), max(s)
        top1 += pred == y
        nll -= math.log(s[y])
        b = min(14, max(0, math.ceil(conf * 15) - 1))
        bins[b][0] += 1
        bins[b][1] += conf
        bins[b][2] += pred == y
        mean = [(t[0][c] + t[1][c]) / 2 for c in range(10)]
        ensemble_agree += argmax(mean) == pred
        for k in range(2):
            agree[k] += argmax(t[k]) == pred
    ece = sum(abs(correct / count - confs / count) * count / n for count, confs, correct in bins if count)
    names = [p.stem for p in run.teacher_files]
    return {
        "n": n,
        "top1": 100 * top1 / n,
        "nll": nll / n,
        "ece": 100 * ece,
        "ensemble_agreement": 100 * ensemble_agree / n,
        "teacher_agreement": {names[k]: 100 * agree[k] / n for k in range(2)},
    }


def test_json_figures_equal_a_hand_computation_and_result_json(
    kd_run: FinishedRun, capsys: pytest.CaptureFixture
) -> None:
    assert main([str(kd_run.run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = hand_figures(kd_run)
    assert report["n"] == expected["n"] == 40
    assert report["kind"] == "run" and report["student"] == "fmnist_tiny" and report["split"] == "test"
    assert report["weights"] == str(kd_run.run_dir / "checkpoints" / "last.pt")
    assert report["teachers"] == ["teacher1", "teacher2"] and report["ece_bins"] == 15
    for key in ("top1", "nll", "ece", "ensemble_agreement"):
        assert report[key] == pytest.approx(expected[key], abs=1e-6), key
    assert report["teacher_agreement"] == pytest.approx(expected["teacher_agreement"], abs=1e-6)
    assert report["top1"] == pytest.approx(kd_run.result["top1"])
    # The run itself wrote the same figures into result.json when it finished.
    for key in ("ece", "nll", "ensemble_agreement"):
        assert kd_run.result[key] == pytest.approx(expected[key], abs=1e-6), key
    assert kd_run.result["teacher_agreement"] == pytest.approx(expected["teacher_agreement"], abs=1e-6)
    assert sum(report["per_class_top1"][c] * n / 100 for c, n in _class_counts(kd_run).items()) == pytest.approx(
        report["top1"] * report["n"] / 100
    )


def _class_counts(run: FinishedRun) -> dict[str, int]:
    data = build_data(run_config(run.run_dir).data, Path("/nonexistent"), 0, torch.device("cpu"))
    labels = torch.cat([b.y for b in data.test])
    return {str(c): int((labels == c).sum()) for c in range(10) if (labels == c).any()}


def test_table_and_overrides(kd_run: FinishedRun, capsys: pytest.CaptureFixture) -> None:
    assert main([str(kd_run.run_dir), "--split", "val", "teachers=none", "data.eval_batch_size=7"]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"fmnist_tiny on synthetic (val, 24 images): {kd_run.run_dir}/checkpoints/last.pt\n")
    assert "ECE (15 bins, %)" in table and "NLL" in table and "teacher" not in table
    assert main([str(kd_run.run_dir)]) == 0
    table = capsys.readouterr().out
    expected = hand_figures(kd_run)
    for name in ("teacher1", "teacher2"):
        line = next(ln for ln in table.splitlines() if ln.startswith(f"teacher {name}"))
        assert line.split()[-1] == f"{expected['teacher_agreement'][name]:.2f}"
    line = next(ln for ln in table.splitlines() if ln.startswith("ensemble (mean softmax)"))
    assert line.split()[-1] == f"{expected['ensemble_agreement']:.2f}"
    assert f"{expected['ece']:.2f}" in next(ln for ln in table.splitlines() if ln.startswith("ECE"))


def test_a_checkpoint_file_and_best_checkpoint_evaluate_too(kd_run: FinishedRun, capsys: pytest.CaptureFixture) -> None:
    assert main([str(kd_run.run_dir / "checkpoints" / "best.pt"), "--json", "teachers=none"]) == 0
    by_file = json.loads(capsys.readouterr().out)
    assert main([str(kd_run.run_dir), "--checkpoint", "best", "--json", "teachers=none"]) == 0
    by_dir = json.loads(capsys.readouterr().out)
    assert by_file["kind"] == "checkpoint" and by_file["top1"] == by_dir["top1"] == pytest.approx(
        kd_run.result["best_top1"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{run}", "data.tset_subset=3"], "error: data.tset_subset: no such key in the run's config"),
        (["{run}/nothing"], "error: {run}/nothing: no such run directory, checkpoint file or zoo entry"),
        (["{run}", "optim=adamw"], "error: optim: cannot be overridden here"),
        (["{run}", "data=cifar10"], "error: data.root: cifar10 not found"),
    ],
)
def test_user_errors_are_one_line_and_status_2(
    kd_run: FinishedRun,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("MEAL_DATA", str(kd_run.run_dir / "no_data"))
    caplog.set_level(logging.ERROR)
    argv = [a.format(run=kd_run.run_dir) for a in args]
    if "data=cifar10" in argv:
        argv.append("data.download=false")
    assert run_entry_point(main, argv) == USER_ERROR
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and lines[0].startswith(message.format(run=kd_run.run_dir)), lines
