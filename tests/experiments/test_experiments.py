"""experiments/: every composition composes, validates and sweeps over valid keys and values.

Paper files are also checked against the published settings they claim, sweep files value by value
(each point of a sweep composes and validates on its own), and one small Fashion-MNIST ablation runs
end to end through `launch.py -m` (slow).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from meal.config import register
from meal.engine.schedule import resolve_epochs
from tests.conftest import REPO, compose_config, needs_fashion_mnist, run_launch, validate_experiment

CONF = REPO / "conf"
EXPERIMENTS = REPO / "experiments"
GROUPS = ("paper", "ablation", "zoo", "suite", "search")
_MISSING = object()


def _experiments() -> list[tuple[str, str]]:
    return [(group, path.stem) for group in GROUPS for path in sorted((EXPERIMENTS / group).glob("*.yaml"))]


def _ids(items: list[tuple[str, str]]) -> list[str]:
    return [f"{group}={option}" for group, option in items]


ALL = _experiments()
SWEEPS = [(g, o) for g, o in ALL if g in ("ablation", "zoo", "suite")]
#: seeds each sweep group runs: ablations 3, the results suite 5, teacher sets one
SWEEP_SEEDS = {"ablation": ["0", "1", "2"], "suite": ["0", "1", "2", "3", "4"], "zoo": ["0"]}


@pytest.fixture
def hydra_compose() -> Iterator[Any]:
    """Compose with the `hydra` node kept (sweeper params live there) and runtime paths set."""
    register()
    GlobalHydra.instance().clear()

    def _compose(overrides: list[str]) -> DictConfig:
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(REPO / "outputs" / "compose")
            cfg.hydra.runtime.cwd = str(REPO)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        yield _compose
    GlobalHydra.instance().clear()


def _job(cfg: DictConfig) -> DictConfig:
    """The job config (no `hydra` node), every interpolation resolvable and nothing mandatory missing."""
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    OmegaConf.to_container(job, resolve=True, throw_on_missing=True)
    return job


def _validate(job: DictConfig) -> None:
    if importlib.util.find_spec(f"meal.methods.{job.method.name}") is None:
        pytest.skip(f"meal.methods.{job.method.name} does not exist yet; composition checked only")
    validate_experiment(job)


def _sweep_params(cfg: DictConfig) -> dict[str, str]:
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    return {} if params is None else {str(k): str(v) for k, v in params.items()}


def _expand(key: str, value: str) -> list[str]:
    """The values of one sweep entry, as Hydra's basic sweeper splits them (`a,b` or `[1,2],[3,4]`)."""
    (override,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [value]


def _is_group(key: str) -> bool:
    name = key.lstrip("+~")
    return (CONF / name).is_dir() or (EXPERIMENTS / name).is_dir()


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


@pytest.mark.slow
@pytest.mark.parametrize(("group", "option"), ALL, ids=_ids(ALL))
def test_experiment_composes_and_validates(hydra_compose, group: str, option: str) -> None:
    cfg = hydra_compose([f"{group}={option}"])
    assert cfg.hydra.runtime.choices[group] == option
    job = _job(cfg)
    assert job.experiment not in ("quickstart", "default"), "set `experiment:` so runs land in their own folder"
    text = (EXPERIMENTS / group / f"{option}.yaml").read_text()
    assert text.startswith("# @package _global_"), "experiment files start with `# @package _global_`"
    for line in text.splitlines():
        assert "hydra/launcher" not in line.split("#")[0], "the launcher is chosen on the command line"
    _validate(job)


def test_every_group_has_experiments() -> None:
    for group in GROUPS:
        assert list((EXPERIMENTS / group).glob("*.yaml")), f"experiments/{group}/ is empty"


@pytest.mark.slow
@pytest.mark.parametrize(("group", "option"), SWEEPS, ids=_ids(SWEEPS))
def test_sweep_keys_exist_and_every_value_composes(hydra_compose, group: str, option: str) -> None:
    base = [f"{group}={option}"]
    cfg = hydra_compose(base)
    params = _sweep_params(cfg)
    assert params, f"{group}/{option}.yaml has no hydra.sweeper.params"
    job = _job(cfg)
    assert _expand("seed", params.pop("seed")) == SWEEP_SEEDS[group]
    # a group swept with one value (the suite's ablations: the method file of the reference row) applies to every point
    fixed = {k: f"{k}={v}" for k, v in params.items() if _is_group(k) and len(_expand(k, v)) == 1}
    for key, value in params.items():
        others = [override for k, override in fixed.items() if k != key]
        if not _is_group(key):
            assert OmegaConf.select(job, key, default=_MISSING) is not _MISSING, f"sweep key {key} is not a config key"
        values = _expand(key, value)
        if len(values) == 1 and not _is_group(key):
            # one alternative to a reference row run elsewhere (the suite's ablations): it must change the value
            reference = OmegaConf.select(_job(hydra_compose([*base, *others])), key)
            changed = OmegaConf.select(_job(hydra_compose([*base, *others, f"{key}={values[0]}"])), key)
            assert _plain(reference) != _plain(changed), f"{key} restates its value"
        for point in values:
            point_cfg = hydra_compose([*base, *others, f"{key}={point}"])
            point_job = _job(point_cfg)
            if _is_group(key):
                assert point_cfg.hydra.runtime.choices[key.lstrip("+~")] == point
            else:
                (parsed,) = OverridesParser.create().parse_overrides([f"{key}={point}"])
                assert _plain(OmegaConf.select(point_job, key)) == parsed.value(), f"{key}={point} was overridden"
            _validate(point_job)


@pytest.mark.slow
def test_quickstart_spells_out_the_default_run() -> None:
    default = OmegaConf.to_container(compose_config([]), resolve=True)
    quickstart = OmegaConf.to_container(compose_config(["paper=meal_fmnist_quickstart"]), resolve=True)
    assert quickstart.pop("experiment") == "meal_fmnist_quickstart"
    default.pop("experiment")
    assert quickstart == default


@pytest.mark.slow
def test_fmnist_paper_files_differ_only_in_the_method() -> None:
    def without_method(option: str) -> dict[str, Any]:
        job = OmegaConf.to_container(compose_config([f"paper={option}"]), resolve=True)
        return {k: v for k, v in job.items() if k not in ("method", "experiment")}

    quickstart = without_method("meal_fmnist_quickstart")
    assert without_method("meal_v2_fmnist") == quickstart
    assert without_method("kd_fmnist") == quickstart


def test_published_cifar10_single_teacher_command() -> None:
    cfg = compose_config(["paper=meal_cifar10_single"])
    assert [m.arch for m in cfg.teachers.members] == ["vgg19_bn"] and cfg.student.arch == "vgg19_bn"
    m = cfg.method
    assert (m.name, m.similarity, m.pool, m.d_lr, m.adversarial) == ("meal_v1", "ce", "avg", 1e-3, "grl")
    assert list(m.out_layer) == [0, 1, 2, 3, 4] and list(m.out_dims) == [10000, 5000, 1000, 500, 10]
    assert list(m.gamma) == [0.001, 0.01, 0.05, 0.1, 1.0] and list(m.eta) == [1.0] * 5
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
    assert not cfg.optim.nesterov
    assert (cfg.data.name, cfg.data.batch_size, cfg.data.augment, cfg.data.pad) == ("cifar10", 128, "pad_crop_flip", 4)
    assert list(cfg.data.mean) == [0.4914, 0.4822, 0.4465] and list(cfg.data.std) == [0.2023, 0.1994, 0.2010]
    assert cfg.schedule.name == "meal_step" and resolve_epochs(cfg.trainer, cfg.schedule) == 350


def test_published_cifar10_ensemble_command() -> None:
    cfg = compose_config(["paper=meal_cifar10_ensemble"])
    assert [m.arch for m in cfg.teachers.members] == [
        "vgg19_bn",
        "dpn92",
        "resnet18",
        "preactresnet18",
        "densenet_cifar",
    ]
    assert cfg.student.arch == "densenet_cifar"
    assert list(cfg.method.out_layer) == [-1] and list(cfg.method.gamma) == [1.0] and list(cfg.method.eta) == [1.0]
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.method.d_lr) == (256, 0.1, 1e-3)
    assert cfg.optim.nesterov and cfg.optim.weight_decay == 1e-4
    assert 1.0 < cfg.schedule.factor <= 2.0, "a grows with the number of teachers, within [1, 2]"
    assert resolve_epochs(cfg.trainer, cfg.schedule) == round(350 * cfg.schedule.factor)


def test_meal_v2_imagenet_resnet50() -> None:
    cfg = compose_config(["paper=meal_v2_imagenet_resnet50"])
    assert (cfg.data.name, cfg.data.batch_size, cfg.student.arch) == ("imagenet", 512, "torchvision.resnet50")
    assert all(m.arch.startswith("torchvision.") for m in cfg.teachers.members) and len(cfg.teachers.members) >= 2
    m = cfg.method
    assert (m.name, m.temperature, m.d_lr, m.K) == ("meal_v2", 1.0, 1e-4, 8)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.01, 0.9, 0.0)
    assert (cfg.schedule.name, list(cfg.schedule.milestones), cfg.schedule.decay) == ("multistep", [100], 0.1)
    assert cfg.trainer.epochs == 180 and cfg.resources.name == "8gpu"


@pytest.mark.slow
def test_meal_v2_imagenet_prints_its_job_config(meal_env: dict[str, str]) -> None:
    result = run_launch(["paper=meal_v2_imagenet_resnet50", "--cfg", "job"], meal_env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torchvision.resnet50" in result.stdout


@pytest.mark.slow
def test_zoo_sweeps_train_the_teacher_sets(hydra_compose) -> None:
    for option, teacher_set in (
        ("cifar10_five", "cifar10_five"),
        ("cifar_trio", "cifar_trio"),
        ("fmnist_trio", "fmnist_trio"),
        ("fmnist_strong", "fmnist_strong"),
    ):
        cfg = hydra_compose([f"zoo={option}"])
        job = _job(cfg)
        assert (job.method.name, job.trainer.export_to_zoo, job.teachers.name) == ("ce", True, "none")
        members = hydra_compose([f"teachers={teacher_set}"]).teachers
        students = _expand("student", _sweep_params(cfg)["student"])
        assert students == [m.arch for m in members.members]
        assert {m.seed for m in members.members} == {int(s) for s in _expand("seed", _sweep_params(cfg)["seed"])}
        training = members.training
        assert (job.trainer.epochs, job.optim.name, job.optim.lr, job.schedule.name) == (
            training.epochs,
            training.optim,
            training.lr,
            training.schedule,
        )
        assert job.trainer.zoo_recipe == training.recipe
        if training.train_subset is not None or option == "fmnist_strong":
            assert job.data.train_subset == training.train_subset


@pytest.mark.slow
def test_fmnist_zoo_trains_what_the_quickstart_would() -> None:
    quickstart = compose_config(["paper=meal_fmnist_quickstart"])
    zoo = compose_config(["zoo=fmnist_trio"])
    assert zoo.data.train_subset == quickstart.teachers.training.train_subset
    for key in ("momentum", "weight_decay", "nesterov"):
        assert zoo.optim[key] == quickstart.optim[key]
    assert zoo.data.batch_size == quickstart.data.batch_size and zoo.seed == 0


def _suite_job(*overrides: str) -> dict[str, Any]:
    return OmegaConf.to_container(compose_config(list(overrides)), resolve=True)


@pytest.mark.slow
def test_suite_methods_share_data_student_budget_and_teachers() -> None:
    """Within a protocol only the method (and, for the label-only runs, the teachers) differ."""
    for protocol, methods in (
        ("fmnist_scratch", ("ce", "kd", "meal_v1", "meal_v1_blockwise", "meal_v2", "dkd")),
        ("fmnist_finetune", ("ce_plain", "kd", "meal_v2")),
    ):
        jobs = {m: _suite_job(f"suite={protocol}", f"+suite/fmnist_method={m}") for m in methods}
        for method, job in jobs.items():
            assert job["data"] == jobs[methods[0]]["data"], method
            assert (job["student"], job["optim"], job["schedule"], job["seed"]) == (
                jobs[methods[0]]["student"],
                jobs[methods[0]]["optim"],
                jobs[methods[0]]["schedule"],
                0,
            )
            assert {k: v for k, v in job["trainer"].items() if k not in ("export_to_zoo", "zoo_recipe")} == {
                k: v for k, v in jobs["kd"]["trainer"].items() if k not in ("export_to_zoo", "zoo_recipe")
            }
            uses_teachers = not method.startswith("ce")
            assert (job["teachers"]["name"] == "fmnist_strong") == uses_teachers
        data = jobs["kd"]["data"]
        assert (data["train_subset"], data["val_split"], data["augment"]) == (None, 0.1, "none")
        for method in ("kd", "meal_v2", "dkd"):
            if method in jobs:
                assert jobs[method]["method"]["soft_labels"] == "cached"
    scratch = _suite_job("suite=fmnist_scratch", "+suite/fmnist_method=ce")
    assert (scratch["trainer"]["export_to_zoo"], scratch["trainer"]["zoo_recipe"]) == (True, "suite_scratch")


@pytest.mark.slow
def test_suite_finetune_starts_from_the_scratch_ce_student_of_its_seed() -> None:
    from meal.teachers import zoo_entry

    for seed in (0, 3):
        scratch = compose_config(["suite=fmnist_scratch", "+suite/fmnist_method=ce", f"seed={seed}"])
        finetune = compose_config(["suite=fmnist_finetune", "+suite/fmnist_method=meal_v2", f"seed={seed}"])
        exported = zoo_entry(
            Path(scratch.paths.zoo), scratch.data.name, scratch.student.arch, seed, scratch.trainer.zoo_recipe
        )
        assert Path(finetune.student.pretrained) == exported
        assert finetune.optim.lr < scratch.optim.lr and finetune.trainer.epochs < scratch.trainer.epochs


def _fmnist_block_dims(arch: str = "fmnist_tiny") -> list[int]:
    import torch

    from meal.models import build_model

    model = build_model(arch, 10, 1, 28)
    with torch.no_grad():
        taps = model.forward_with_taps(torch.zeros(1, 1, 28, 28))
    return [t[0].numel() if t.dim() == 2 else t[0, 0].numel() for t in taps]


def test_fmnist_block_out_dims_fit_the_student_taps() -> None:
    variants = sorted((EXPERIMENTS / "ablation" / "fmnist_blocks").glob("*.yaml"))
    variants.append(EXPERIMENTS / "suite" / "fmnist_method" / "meal_v1_blockwise.yaml")
    for arch in ("fmnist_tiny", "fmnist_small"):
        sizes = _fmnist_block_dims(arch)
        for variant in variants:
            method = OmegaConf.load(variant).method
            for layer, dim in zip(method.out_layer, method.out_dims):
                assert dim <= sizes[layer], f"{variant.name}: {arch} block {layer} has {sizes[layer]} values, not {dim}"


@pytest.mark.slow
@needs_fashion_mnist
def test_fmnist_ablation_runs_end_to_end(meal_env: dict[str, str], tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    two_points = "method.gamma=[0.001,0.01,0.05,0.1,1.0],[0.0,0.0,0.0,0.0,1.0]"  # replaces the file's four
    # at a test's size: quickstart teachers trained by the first job on 2,000 images, not the suite's strong set
    result = run_launch(
        [
            "-m",
            "ablation=fmnist_gamma",
            two_points,
            "seed=0",
            "teachers=fmnist_trio",
            "teachers.train_missing=true",
            "teachers.training.train_subset=2000",
            "data.train_subset=2000",
            "data.test_subset=2000",
            "trainer.epochs=1",
            "teachers.training.epochs=2",
            "logger=none",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        meal_env,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = sorted(sweep_dir.glob("*/result.json"))
    assert len(results) == 2, [p.parent.name for p in sweep_dir.iterdir()]
    gammas = set()
    for path in results:
        outcome = json.loads(path.read_text())
        assert outcome["status"] == "completed" and outcome["experiment"] == "ablation_fmnist_gamma"
        assert outcome["top1"] > 10.0, f"{path}: top1 {outcome['top1']} is not above chance"
        gammas.add(tuple(OmegaConf.load(path.parent / ".hydra" / "config.yaml").method.gamma))
    assert len(gammas) == 2
