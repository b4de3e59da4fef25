"""Every option of every config group composes against its schema; typos and wrong types name the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from meal.config import register
from meal.config.validate import validate
from meal.methods.registry import method_names
from tests.conftest import validate_experiment

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
EXPERIMENTS = REPO / "experiments"
EXPERIMENT_GROUPS = ("paper", "ablation", "zoo")
# groups whose option file name is also the `name` the option carries
NAMED_GROUPS = ("data", "teachers", "logger", "cluster", "resources")


def _options(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def _group_options() -> list[tuple[str, str]]:
    groups = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
    return [(group, option) for group in groups for option in _options(CONF / group)]


def _experiment_options() -> list:
    """Overrides for every experiment file: `group=option`, and for a nested group (group/sub/option.yaml)
    `+group/sub=option`, after the group's option that sweeps over it, if there is one."""
    found = []
    for group in EXPERIMENT_GROUPS:
        directory = EXPERIMENTS / group
        if not directory.is_dir():
            continue
        top = _options(directory)
        found += [[f"{group}={option}"] for option in top]
        for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
            key = f"{group}/{sub.name}"
            parents = [o for o in top if f"+{key}" in (directory / f"{o}.yaml").read_text()]
            found += [[*(f"{group}={o}" for o in parents[:1]), f"+{key}={option}"] for option in _options(sub)]
    if not found:
        skip = pytest.mark.skip(reason="experiments/ holds no compositions yet")
        return [pytest.param([], marks=skip)]
    return [pytest.param(overrides, id=" ".join(overrides)) for overrides in found]


def _experiment_file(override: str) -> Path:
    group, option = override.lstrip("+").split("=")
    return EXPERIMENTS / group / f"{option}.yaml"


def _holds(actual: object, written: object) -> bool:
    """Whether a composed value holds what a file wrote (schemas add defaults to dicts)."""
    if isinstance(written, str) and "${" in written:
        return True  # interpolations are checked by resolving the whole config
    if isinstance(written, dict):
        return isinstance(actual, dict) and all(k in actual and _holds(actual[k], v) for k, v in written.items())
    if isinstance(written, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(written)
            and all(_holds(a, w) for a, w in zip(actual, written, strict=True))
        )
    return actual == written


def _error_text(exc: BaseException) -> str:
    """The message of an exception and of everything it was raised from."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_the_conf_tree_has_the_designed_groups() -> None:
    groups = {group for group, _ in _group_options()}
    assert {
        "data",
        "student",
        "teachers",
        "method",
        "optim",
        "schedule",
        "trainer",
        "logger",
        "paths",
        "cluster",
        "resources",
    } <= groups
    assert {"fashion_mnist", "cifar10", "cifar100", "svhn", "imagenet", "imagefolder", "synthetic"} <= set(
        _options(CONF / "data")
    )
    assert set(method_names()) <= set(_options(CONF / "method")), "every registered method has its yaml"
    assert {"local", "slurm"} <= set(_options(CONF / "hydra" / "launcher"))


@pytest.mark.slow
@pytest.mark.parametrize(("group", "option"), _group_options())
def test_every_group_option_composes_and_validates(compose_cfg, group: str, option: str) -> None:
    cfg = compose_cfg([f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert "hydra" not in resolved
    assert resolved[group], f"{group}={option} composed to an empty node"
    if group in NAMED_GROUPS:
        assert resolved[group]["name"] == option
    if group == "method":
        assert resolved["method"]["name"] in method_names()
    for path_key in ("root_dir", "output_dir", "data_dir", "zoo", "cache_dir"):
        assert os.path.isabs(resolved["paths"][path_key]), f"paths.{path_key} is not absolute"
    validate(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", _experiment_options())
def test_every_experiment_composes_and_validates(compose_cfg, overrides: list[str]) -> None:
    cfg = compose_cfg(overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    # the experiment files' own values (later files win) are what the composed config holds
    files = [OmegaConf.load(_experiment_file(o)) for o in overrides]
    written = OmegaConf.to_container(OmegaConf.merge(*files))
    for key in ("defaults", "hydra"):
        written.pop(key, None)
    for key, value in written.items():
        assert _holds(resolved[key], value), key
    validate_experiment(cfg)


@pytest.fixture
def hydra_compose():
    """Compose with the `hydra` node kept (launcher settings live there)."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        yield lambda overrides: compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("launcher", _options(CONF / "hydra" / "launcher"))
def test_launcher_options_compose_and_resolve(hydra_compose, launcher: str) -> None:
    cfg = hydra_compose([f"hydra/launcher={launcher}", "resources=1gpu"])
    resolved = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert resolved["_target_"].startswith("hydra_plugins.hydra_submitit_launcher")
    assert resolved["timeout_min"] == 720
    assert resolved["gpus_per_node"] == 1
    assert resolved["cpus_per_task"] == 8
    assert resolved["mem_gb"] == 32
    assert resolved["name"] == cfg.experiment
    assert resolved["submitit_folder"].endswith("/.submitit/%j")


def test_local_launcher_runs_submitit_locally(hydra_compose) -> None:
    cfg = hydra_compose(["hydra/launcher=local"])
    resolved = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert resolved["_target_"].endswith(".LocalLauncher")
    assert resolved["gpus_per_node"] == 0
    assert resolved["timeout_min"] == cfg.resources.timeout_min


@pytest.mark.slow
def test_slurm_launcher_takes_cluster_and_resources(hydra_compose) -> None:
    cfg = hydra_compose(["hydra/launcher=slurm", "cluster=example_site", "resources=2x8gpu"])
    slurm = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert slurm["_target_"].endswith(".SlurmLauncher")
    assert (slurm["partition"], slurm["account"], slurm["qos"]) == ("gpu", "my_project", "normal")
    assert slurm["setup"] == list(cfg.cluster.setup)
    assert (slurm["nodes"], slurm["tasks_per_node"], slurm["gpus_per_node"]) == (2, 8, 8)
    assert slurm["timeout_min"] == 1440
    assert slurm["array_parallelism"] == 4
    assert slurm["max_num_timeout"] == 3

    cpu = OmegaConf.to_container(hydra_compose(["hydra/launcher=slurm", "resources=cpu"]).hydra.launcher, resolve=True)
    assert cpu["gpus_per_node"] is None  # no --gpus-per-node=0 line for CPU jobs
    assert cpu["partition"] == "debug"
    assert cpu["account"] is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["trainer.epoch=3"], "trainer.epoch"),
        (["trainer.epochs=abc"], "trainer.epochs"),
        (["data.batch_size=[1]"], "data.batch_size"),
        (["data.val_split=half"], "data.val_split"),
        (["optim.lr=fast"], "optim.lr"),
        (["data.colour=3"], "data.colour"),
        (["method=ce", "method.gamma=[1]"], "gamma"),
        (["method=meal_v1", "method.gamma=abc"], "method.gamma"),
    ],
)
def test_typos_and_wrong_types_fail_naming_the_key(compose_cfg, overrides: list[str], key: str) -> None:
    with pytest.raises(Exception) as info:
        compose_cfg(overrides)
    assert key in _error_text(info.value)


def test_method_option_selects_its_schema(compose_cfg) -> None:
    ce = compose_cfg(["method=ce"])
    assert OmegaConf.to_container(ce.method) == {"name": "ce", "label_smoothing": 0.0}
    blockwise = compose_cfg(["method=meal_v1_blockwise"])
    assert blockwise.method.name == "meal_v1"
    method = blockwise.method
    assert len(method.out_layer) == len(method.gamma) == len(method.eta) == len(method.out_dims) == 5


def _launch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEAL_ROOT": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_launch_prints_the_job_config() -> None:
    result = _launch("--cfg", "job")
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert "hydra" not in job
    assert job["method"]["name"] == "meal_v1"
    assert job["method"]["out_layer"] == [-1]
    assert job["data"]["name"] == "fashion_mnist"
    assert job["data"]["in_channels"] == 1
    assert job["student"]["arch"] == "fmnist_tiny"
    assert job["teachers"]["name"] == "fmnist_trio"
    primary = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))  # its own values win
    assert job["trainer"]["epochs"] == primary["trainer"]["epochs"]
    assert job["experiment"] == primary["experiment"]
    assert job["seed"] == primary["seed"]


@pytest.mark.slow
def test_launch_prints_the_defaults_tree() -> None:
    result = _launch("--info", "defaults-tree")
    assert result.returncode == 0, result.stderr
    for line in (
        "data: fashion_mnist",
        "method: meal_v1",
        "schema/method/meal_v1",
        "student: fmnist_tiny",
        "teachers: fmnist_trio",
        "hydra/launcher: basic",
    ):
        assert line in result.stdout


@pytest.mark.slow
def test_launch_rejects_a_misspelt_key() -> None:
    result = _launch("--cfg", "job", "trainer.epoch=3")
    assert result.returncode != 0
    assert "trainer.epoch" in result.stderr
