"""The sweep objective and best.pt follow validation top-1 when there is a validation split; a search
that would tune on the test set is refused unless `trainer.objective=test` opts in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from meal import app
from meal.errors import ConfigError
from meal.objective import GRID_SWEEPERS, check_search_objective, is_search, objective_metric
from tests.conftest import compose_config
from tests.evaluation.conftest import EPOCHS, FinishedRun

# every test trains a run in-process (or reads the kd_run fixture's)
pytestmark = pytest.mark.slow

OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
BASIC = next(iter(GRID_SWEEPERS))


def cfg(objective: str = "auto", val_split: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(trainer=SimpleNamespace(objective=objective), data=SimpleNamespace(val_split=val_split))


@pytest.mark.parametrize(
    ("objective", "val_split", "metric"),
    [
        ("auto", 0.0, "top1"),
        ("auto", 0.1, "val_top1"),
        ("val", 0.1, "val_top1"),
        ("test", 0.1, "top1"),
        ("test", 0.0, "top1"),
    ],
)
def test_objective_metric(objective: str, val_split: float, metric: str) -> None:
    assert objective_metric(objective, val_split) == metric


def test_objective_val_without_a_split_and_unknown_objectives_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^data\.val_split: is 0, so trainer\.objective=val has no validation"):
        objective_metric("val", 0.0)
    with pytest.raises(ConfigError, match=r"^trainer\.objective: unknown objective 'best' \(choose auto, val or test"):
        objective_metric("best", 0.1)


def test_a_search_on_the_test_set_is_refused_unless_opted_in() -> None:
    assert is_search(OPTUNA) and not is_search(BASIC) and not is_search(None)
    with pytest.raises(ConfigError) as info:
        check_search_objective(cfg(), OPTUNA)
    message = str(info.value)
    assert message.startswith("data.val_split: is 0, so this search (OptunaSweeper) would tune on the test set")
    assert "trainer.objective=test" in message and "\n" not in message
    assert check_search_objective(cfg("test"), OPTUNA) == "top1"  # the explicit opt-in
    assert check_search_objective(cfg(val_split=0.1), OPTUNA) == "val_top1"
    assert check_search_objective(cfg(), BASIC) == "top1"  # a grid chooses nothing: test top-1 is harmless
    assert check_search_objective(cfg(), None) == "top1"  # a single run


def test_run_refuses_a_search_on_the_test_set_before_training(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "current_sweeper", lambda: OPTUNA)
    trained = []
    monkeypatch.setattr(app, "train", lambda *a, **k: trained.append(a))
    try:
        config = compose_config(["method=ce", "teachers=none", "data=synthetic", "logger=none"], tmp_path / "r")
        with pytest.raises(ConfigError, match=r"^data\.val_split: is 0, so this search"):
            app.run(config)
    finally:
        GlobalHydra.instance().clear()
    assert trained == [] and not (tmp_path / "r").exists()


def test_the_run_returns_final_validation_top1_and_picks_best_by_validation(kd_run: FinishedRun) -> None:
    result, metrics = kd_run.result, kd_run.metrics
    assert len(metrics) == EPOCHS and all("val_top1" in m and "top1" in m for m in metrics)
    assert kd_run.returned == result["val_top1"] == metrics[-1]["val_top1"]
    assert result["objective"] == result["best_metric"] == "val_top1"
    best = max(range(EPOCHS), key=lambda i: (metrics[i]["val_top1"], -i))  # the first epoch with the best val
    assert result["best_epoch"] == best + 1
    assert result["best_val_top1"] == metrics[best]["val_top1"]
    assert result["best_top1"] == metrics[best]["top1"], "best_top1 is the test top-1 at the validation-chosen epoch"
    checkpoint = torch.load(kd_run.run_dir / "checkpoints" / "best.pt", weights_only=False)
    assert checkpoint["epoch"] == best + 1 and checkpoint["best_val_top1"] == result["best_val_top1"]
    last = torch.load(kd_run.run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert (last["best_epoch"], last["best_top1"]) == (best + 1, result["best_top1"])


def test_without_a_validation_split_the_run_returns_test_top1(tmp_path) -> None:
    try:
        config = compose_config(
            [
                "method=ce",
                "teachers=none",
                "data=synthetic",
                "data.train_size=64",
                "data.test_size=32",
                "data.in_channels=1",
                "data.image_size=12",
                "data.mean=[0.5]",
                "data.std=[0.25]",
                "logger=none",
                "trainer.epochs=2",
                "trainer.progress=off",
            ],
            tmp_path / "r",
        )
        returned = app.run(config)
    finally:
        GlobalHydra.instance().clear()
    import json

    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert returned == result["top1"] and result["best_metric"] == "top1" and result["best_val_top1"] is None
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert result["best_top1"] == max(m["top1"] for m in metrics)
