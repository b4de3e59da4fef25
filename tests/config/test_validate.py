"""Cross-field validation of a composed config: every failure is a ConfigError that starts with the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from meal.config import register
from meal.config.validate import validate
from meal.errors import ConfigError, MealError
from meal.methods.registry import method_names

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="module")
def base_configs() -> dict[str, DictConfig]:
    """Composed once per module; tests change copies of them."""
    register()
    GlobalHydra.instance().clear()
    configs = {}
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        for method in method_names():
            configs[method] = compose("config", overrides=[f"method={method}"])
    GlobalHydra.instance().clear()
    return configs


def _with(base: DictConfig, **values: Any) -> DictConfig:
    """A copy of `base` with dotted keys (given with `__` for `.`) set; the schema still checks types."""
    cfg = copy.deepcopy(base)
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return cfg


def _fails(cfg: DictConfig, key: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert isinstance(info.value, MealError)
    return info.value


@pytest.mark.parametrize("method", method_names())
def test_defaults_are_valid(base_configs, method: str) -> None:
    validate(base_configs[method])


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_kd_alpha_must_be_a_fraction(base_configs, alpha: float) -> None:
    _fails(_with(base_configs["kd"], method__alpha=alpha), "method.alpha")
    validate(_with(base_configs["kd"], method__alpha=0.0))
    validate(_with(base_configs["kd"], method__alpha=1.0))


def test_meal_v2_checks(base_configs) -> None:
    _fails(_with(base_configs["meal_v2"], method__temperature=-1.0), "method.temperature")
    validate(_with(base_configs["meal_v2"], method__soft_labels="cached"))


@pytest.mark.parametrize("key", ["gamma", "eta", "out_dims"])
def test_blockwise_list_lengths_must_match_out_layer(base_configs, key: str) -> None:
    cfg = _with(base_configs["meal_v1"], **{f"method__{key}": [1, 2]})
    error = _fails(cfg, f"method.{key}")
    assert "has 2 values but method.out_layer has 1" in str(error)


def test_longer_out_layer_names_the_first_short_list(base_configs) -> None:
    cfg = _with(base_configs["meal_v1"], method__out_layer=[-1, 2], method__out_dims=[10, 64])
    _fails(cfg, "method.gamma")
    cfg = _with(cfg, method__gamma=[1.0, 0.5])
    _fails(cfg, "method.eta")
    validate(_with(cfg, method__eta=[1.0, 1.0]))


def test_repeated_and_empty_out_layer(base_configs) -> None:
    repeated = _with(
        base_configs["meal_v1"],
        method__out_layer=[3, 3],
        method__out_dims=[10, 10],
        method__gamma=[1, 1],
        method__eta=[1, 1],
    )
    assert "repeats a block" in str(_fails(repeated, "method.out_layer"))
    empty = _with(base_configs["meal_v1"], method__out_layer=[], method__out_dims=[], method__gamma=[], method__eta=[])
    _fails(empty, "method.out_layer")


def test_out_dims_must_be_positive(base_configs) -> None:
    cfg = _with(
        base_configs["meal_v1"],
        method__out_layer=[2, -1],
        method__out_dims=[64, 0],
        method__gamma=[1, 1],
        method__eta=[1, 1],
    )
    _fails(cfg, "method.out_dims[1]")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("optim.lr", 0.0),
        ("optim.lr", -0.1),
        ("trainer.epochs", 0),
        ("trainer.epochs", -3),
        ("data.batch_size", 0),
        ("data.batch_size", -8),
        ("data.eval_batch_size", 0),
        ("trainer.max_steps", 0),
        ("method.d_lr", 0.0),
        ("method.K", 0),
        ("method.temperature", 0.0),
    ],
)
def test_non_positive_values_are_refused(base_configs, key: str, value: float) -> None:
    cfg = _with(base_configs["meal_v1"], **{key.replace(".", "__"): value})
    error = _fails(cfg, key)
    assert f"{key}: must be > 0, got" in str(error) or f"{key}: must be >= 1, got" in str(error)


def test_unset_epochs_need_a_schedule_with_a_length(base_configs) -> None:
    validate(_with(base_configs["ce"], trainer__epochs=None, trainer__max_steps=None, schedule__name="meal_step"))
    error = _fails(_with(base_configs["ce"], trainer__epochs=None, schedule__name="cosine"), "trainer.epochs")
    assert "schedule 'cosine' has no length" in str(error)
    error = _fails(
        _with(base_configs["ce"], trainer__epochs=None, schedule__name="meal_step", schedule__factor=0.001),
        "schedule.factor",
    )
    assert "350 x 0.001 = 0 epochs" in str(error)


def test_teacher_training_epochs_are_checked_with_or_without_teachers(base_configs) -> None:
    cfg = _with(base_configs["ce"], teachers__training__epochs=0)
    assert len(cfg.teachers.members) > 0
    _fails(cfg, "teachers.training.epochs")
    _fails(_with(cfg, teachers__members=[]), "teachers.training.epochs")


def test_unknown_method_name_from_the_command_line(compose_cfg) -> None:
    cfg = compose_cfg(["method.name=foo"])
    error = _fails(cfg, "method.name")
    assert "'foo'" in str(error)
    assert "meal_v1" in str(error)  # lists the methods there are


def test_errors_from_overrides_on_the_command_line(compose_cfg) -> None:
    cfg = compose_cfg(["method.gamma=[1.0,0.5]", "optim.lr=0"])
    _fails(cfg, "optim.lr")  # one violation at a time: single keys' ranges first, then rules across keys
    cfg.optim.lr = 0.1
    _fails(cfg, "method.gamma")


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", "CPU", "cuda:-1"])
def test_device_forms(base_configs, device: str) -> None:
    error = _fails(_with(base_configs["ce"], trainer__device=device), "trainer.device")
    assert str(error) == f"trainer.device: '{device}' is not a device (use auto, cpu, cuda, cuda:N or mps)"


def test_devices_this_machine_lacks(base_configs) -> None:
    import torch

    if not torch.backends.mps.is_available():
        error = _fails(_with(base_configs["ce"], trainer__device="mps"), "trainer.device")
        assert "MPS device is not available" in str(error)
    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    _fails(_with(base_configs["ce"], trainer__device=missing), "trainer.device")
    for device in ("auto", "cpu"):
        validate(_with(base_configs["ce"], trainer__device=device))


def test_nesterov_needs_momentum(base_configs) -> None:
    cfg = _with(base_configs["ce"], optim__nesterov=True, optim__momentum=0.0)
    assert "optim.momentum is 0" in str(_fails(cfg, "optim.nesterov"))
    validate(_with(cfg, optim__momentum=0.9))


@pytest.mark.parametrize(("key", "method"), [("optim.betas", "ce"), ("method.d_betas", "meal_v2")])
def test_betas_come_in_pairs(base_configs, key: str, method: str) -> None:
    error = _fails(_with(base_configs[method], **{key.replace(".", "__"): [0.9]}), key)
    assert "needs 2 values (beta1, beta2), got [0.9]" in str(error)
