"""FitNets hints: the loss against a hand computation, the regressors learning with the student (in one step,
through the Trainer, across a resume), the checks before work, and a run through launch.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor

import meal.app
import meal.pieces
from meal.app import train
from meal.data import Batch, build_data
from meal.engine.schedule import resolve_epochs
from meal.engine.trainer import Trainer
from meal.errors import ConfigError
from meal.methods import build_method, method_names
from meal.methods.fitnets import FitNets, FitNetsMethodConfig
from meal.models import build_model
from meal.preflight import check_before_work
from tests.conftest import compose_config, needs_fashion_mnist, run_launch
from tests.softlabels.toy import SIZE, method_cfg, save_teachers, toy_teachers

# fmnist_tiny on SIZE x SIZE inputs: block outputs (8, 6, 6), (16, 3, 3), (16, 1, 1), (32,), (10,)


def student(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("fmnist_tiny", 10, 1, SIZE)


def a_batch(n: int = 6, seed: int = 3) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 1, SIZE, SIZE, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(n))


def fitnets(seed: int = 0, **options: object) -> FitNets:
    """The method around a fresh student and two frozen toy teachers; `seed` sets the regressors' initial weights."""
    s = student()
    torch.manual_seed(seed)
    return FitNets(method_cfg("fitnets", **options), s, toy_teachers((1, 2)), 10)


def hand_log_softmax(z: Tensor) -> Tensor:
    return z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))


def hand_pool_to(t: Tensor, size: int) -> Tensor:
    """Average pooling by a whole factor, written out: each size x size grid cell is the mean of its block."""
    b, c, h, w = t.shape
    return t.reshape(b, c, size, h // size, size, w // size).mean(dim=(3, 5))


def hand_regress(layer: torch.nn.Module, s: Tensor) -> Tensor:
    """The regressor written out: 1x1 convolution then BatchNorm with the batch's statistics, or a linear layer."""
    if s.dim() == 2:
        return s @ layer.weight.T + layer.bias
    conv, bn = layer[0], layer[1]
    z = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], s)
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    var = ((z - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (z - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


@pytest.mark.parametrize(
    ("guided", "hint"),
    [([0, -2], [1, -2]), ([1], [0])],
    ids=["student-map-pooled-and-vectors", "teacher-maps-pooled"],
)
def test_loss_equals_hand_computation(guided: list[int], hint: list[int]) -> None:
    ce_w, kd_w, hint_w, tau = 0.5, 2.0, 3.0, 2.0
    method = fitnets(
        guided_layer=guided, hint_layer=hint, ce_weight=ce_w, kd_weight=kd_w, hint_weight=hint_w, temperature=tau
    )
    with torch.no_grad():  # BatchNorm's affine parameters away from 1 and 0, so that they count
        for layer in method.regressor.layers:
            if isinstance(layer, torch.nn.Sequential):
                layer[1].weight.uniform_(0.5, 1.5)
                layer[1].bias.uniform_(-0.5, 0.5)
    method.train()
    batch = a_batch()
    out = method.training_step(batch, 0)
    with torch.no_grad():
        s_blocks = method.student.forward_with_taps(batch.x)
        t_blocks = [t.model.forward_with_taps(batch.x) for t in method.teacher_list]
        s = s_blocks[-1]
        ce = -hand_log_softmax(s)[torch.arange(len(batch.y)), batch.y].mean()
        p = sum(torch.exp(hand_log_softmax(t[-1] / tau)) for t in t_blocks) / 2
        kl = (p * (torch.log(p) - hand_log_softmax(s / tau))).sum(dim=1).mean() * tau**2
        mses = []
        for layer, g, h in zip(method.regressor.layers, guided, hint):
            r = hand_regress(layer, s_blocks[g])
            target = (t_blocks[0][h] + t_blocks[1][h]) / 2
            if r.dim() == 4:  # the larger maps pooled to the smaller one's 3 x 3
                assert {r.shape[-1], target.shape[-1]} == {6, 3}
                r, target = hand_pool_to(r, 3), hand_pool_to(target, 3)
            mses.append(((r - target) ** 2).mean())
        hint_term = sum(mses) / len(mses)
        expected = ce_w * ce + kd_w * kl + hint_w * hint_term
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logs["ce"], ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logs["kd_kl"], kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logs["hint"], hint_term, rtol=1e-5, atol=1e-6)
    assert min(float(ce), float(kl), float(hint_term)) > 1e-3, "every term counts"


def test_regressors_fit_the_blocks_they_join() -> None:
    method = fitnets(guided_layer=[0, 1, -2, -1], hint_layer=[1, 0, -2, -1])
    convs = [(layer[0].in_channels, layer[0].out_channels) for layer in method.regressor.layers[:2]]
    linears = [(layer.in_features, layer.out_features) for layer in method.regressor.layers[2:]]
    assert convs == [(8, 16), (16, 8)] and linears == [(32, 32), (10, 10)]
    assert all(layer[0].bias is None for layer in method.regressor.layers[:2]), "1x1 convolutions without bias"


def test_a_step_trains_the_regressor_and_the_student() -> None:
    method = fitnets(guided_layer=[0, -2], hint_layer=[1, -2])
    method.train()
    optimizer = torch.optim.SGD(method.student_parameters(), lr=0.1)
    regressor = [p.detach().clone() for p in method.regressor.parameters()]
    weights = [p.detach().clone() for p in method.student.parameters()]
    teachers = [{k: v.clone() for k, v in t.model.state_dict().items()} for t in method.teacher_list]
    method.training_step(a_batch(), 0).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.regressor.parameters())
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(regressor, method.regressor.parameters())), "every one moves"
    assert all(not torch.equal(a, b) for a, b in zip(weights, method.student.parameters()))
    for teacher, before in zip(method.teacher_list, teachers):
        assert not teacher.model.training
        assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items()), "teachers are frozen"


def test_construction_leaves_every_module_in_its_mode() -> None:
    s = student()
    s.train()
    s.net.block1.eval()  # a mixed state is kept as it is, not made uniform
    teachers = toy_teachers((1, 2))
    FitNets(method_cfg("fitnets"), s, teachers, 10)
    assert s.training and s.net.block2.training and not s.net.block1.training
    assert all(not m.training for t in teachers for m in t.model.modules())


def test_parameters_and_replicas_hold_the_regressor_and_unused_parameters_are_declared() -> None:
    method = fitnets()
    own = {id(p) for p in method.regressor.parameters()}
    assert len(own) == 2 and own <= {id(p) for p in method.student_parameters()}
    assert len(method.student_parameters()) == len(list(method.student.parameters())) + 2
    assert method.data_parallel_modules() == [method.student, method.regressor]
    assert not method.may_leave_student_parameters_unused()
    assert fitnets(ce_weight=0.0).may_leave_student_parameters_unused(), "the head gets no gradient"
    assert not fitnets(ce_weight=0.0, kd_weight=1.0).may_leave_student_parameters_unused()
    assert not fitnets(ce_weight=0.0, guided_layer=[-1], hint_layer=[-1]).may_leave_student_parameters_unused()
    without = fitnets(hint_weight=0.0)  # CE alone: no regressor to train or to wait for
    assert without.regressor is None and without.data_parallel_modules() == [without.student]
    assert len(without.student_parameters()) == len(list(without.student.parameters()))
    out = without.training_step(a_batch(), 0)
    assert set(out.logs) == {"ce"}


def test_the_hint_alone_leaves_the_head_without_gradient() -> None:
    method = fitnets(ce_weight=0.0)
    method.train()
    method.training_step(a_batch(), 0).loss.backward()
    assert method.student.net.classifier.weight.grad is None
    assert method.student.net.hidden[2].weight.grad.abs().sum() > 0


def _trainer(tmp_path: Path, method: FitNets, *overrides: str) -> Trainer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = compose_config(
        [
            "method=fitnets",
            "data=synthetic",
            "data.in_channels=1",
            f"data.image_size={SIZE}",
            "data.train_size=32",
            "data.test_size=16",
            "data.batch_size=16",
            "data.mean=[0.5]",
            "data.std=[0.25]",
            "data.augment=pad_crop_flip",
            "data.pad=1",
            "teachers=none",
            "logger=none",
            "optim.lr=0.1",
            "trainer.epochs=2",
            "trainer.progress=off",
            *overrides,
        ],
        tmp_path,
    )
    data = build_data(cfg.data, tmp_path, 0, torch.device("cpu"))
    return Trainer(cfg, method, data, tmp_path, torch.device("cpu"), resolve_epochs(cfg.trainer, cfg.schedule))


def test_the_trainer_steps_the_regressor_with_the_student(tmp_path: Path) -> None:
    method = fitnets(guided_layer=[0, -2], hint_layer=[1, -2])
    trainer = _trainer(tmp_path, method)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in method.regressor.parameters()} <= optimized
    assert trainer.extras == [], "no optimizer of its own: the regressors follow the student's LR and schedule"
    before = {k: v.clone() for k, v in method.regressor.state_dict().items()}
    state = trainer.fit()
    assert state.global_step == 4
    after = method.regressor.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if "num_batches" not in k)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(row["train_hint"] > 0 and row["train_hint_pair0"] > 0 and row["train_ce"] > 0 for row in rows)


@pytest.mark.slow
def test_a_resumed_run_restores_the_regressor(tmp_path: Path) -> None:
    options = {"guided_layer": [0, -2], "hint_layer": [1, -2]}
    whole = fitnets(seed=0, **options)
    _trainer(tmp_path / "whole", whole).fit()

    first = fitnets(seed=0, **options)
    assert _trainer(tmp_path / "parts", first, "trainer.max_steps=3").fit().global_step == 3
    saved = torch.load(tmp_path / "parts" / "checkpoints" / "last.pt", weights_only=False)
    assert {f"regressor.{k}" for k in first.regressor.state_dict()} <= set(saved["method"])

    resumed = fitnets(seed=7, **options)  # other initial regressors: only the checkpoint can make them equal
    assert not torch.equal(resumed.regressor.layers[0][0].weight, first.regressor.layers[0][0].weight)
    trainer = _trainer(tmp_path / "parts", resumed)
    assert trainer.resume() and trainer.state.global_step == 3
    for key, value in first.regressor.state_dict().items():
        assert torch.equal(resumed.regressor.state_dict()[key], value), key
    trainer.fit()
    for key, value in whole.regressor.state_dict().items():  # the regressors' momentum came back too
        torch.testing.assert_close(resumed.regressor.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    for key, value in whole.student.state_dict().items():
        torch.testing.assert_close(resumed.student.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def _nothing_may_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the config was checked")

    monkeypatch.setattr(meal.pieces, "build_data", refuse)
    monkeypatch.setattr(meal.pieces, "load_teachers", refuse)
    monkeypatch.setattr(meal.app, "train_missing_teacher", refuse)


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        (["method.guided_layer=[-2,-3]"], "method.guided_layer", "has 2 values but method.hint_layer has 1"),
        (["method.hint_layer=[]", "method.guided_layer=[]"], "method.hint_layer", "is empty"),
        (["method.hint_layer=[5]"], "method.hint_layer[0]", "index 5 is out of range: teacher 'fmnist_cnn-s0'"),
        (["method.guided_layer=[-6]"], "method.guided_layer[0]", "index -6 is out of range: fmnist_tiny has 5"),
        (["method.hint_weight=0", "method.ce_weight=0"], "method.hint_weight", "are all 0"),
        (["method.kd_weight=-1"], "method.kd_weight", "must be >= 0"),
        (["method.temperature=0"], "method.temperature", "must be > 0"),
        (["method.hint_layer=[1]"], "method.guided_layer[0]", "is a vector (32,) but the teachers' hint block 1"),
        (
            ["teachers=fmnist_pair"],
            "method.hint_layer[0]",
            "is (64,) in teacher 'fmnist_cnn-s0' (fmnist_cnn) and (96,)",
        ),
    ],
    ids=["lengths", "empty", "hint-range", "guided-range", "all-zero", "negative", "temperature", "kinds", "teachers"],
)
def test_bad_configs_are_refused_before_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], key: str, problem: str
) -> None:
    monkeypatch.setenv("MEAL_ZOO", str(tmp_path / "zoo"))
    _nothing_may_load(monkeypatch)
    teachers = [o for o in overrides if o.startswith("teachers=")] or ["teachers=fmnist_single"]
    base = ["method=fitnets", *teachers, "teachers.train_missing=true", "logger=none"]
    run = tmp_path / "run"
    cfg = compose_config([*base, *(o for o in overrides if not o.startswith("teachers="))], run)
    with pytest.raises(ConfigError) as info:
        check_before_work(cfg)
    assert info.value.key == key and problem in str(info.value), str(info.value)
    with pytest.raises(ConfigError) as again:  # and a run stops there: no data, no teacher, no file
        train(cfg, run)
    assert again.value.key == key
    assert not (tmp_path / "zoo").exists()
    assert not run.exists() or [p.name for p in run.iterdir()] == [".lock"]


@pytest.mark.parametrize(
    "overrides",
    [[], ["method.hint_layer=[0,1,-2]", "method.guided_layer=[1,0,-2]", "method.kd_weight=1"]],
    ids=["defaults", "maps-and-vectors"],
)
def test_good_configs_pass_the_checks(overrides: list[str]) -> None:
    check_before_work(compose_config(["method=fitnets", "teachers=fmnist_single", *overrides]))
    two_of_a_kind = "teachers.members=[{arch:fmnist_cnn,seed:0},{arch:fmnist_cnn,seed:1}]"
    check_before_work(compose_config(["method=fitnets", "teachers=none", two_of_a_kind, *overrides]))


def test_registered_and_composed_from_its_one_yaml() -> None:
    assert "fitnets" in method_names()
    cfg = compose_config(["method=fitnets"]).method
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(OmegaConf.structured(FitNetsMethodConfig))
    assert (cfg.hint_layer, cfg.guided_layer, cfg.hint_weight, cfg.ce_weight, cfg.kd_weight, cfg.temperature) == (
        [-2],
        [-2],
        1.0,
        1.0,
        0.0,
        4.0,
    )
    assert FitNets.uses_teachers and not FitNets.supports_cached_soft_labels
    assert isinstance(build_method(cfg, student(), toy_teachers(), 10), FitNets)


@pytest.mark.slow
@needs_fashion_mnist
def test_a_run_through_launch_learns(tmp_path: Path, meal_env: dict[str, str]) -> None:
    """Fashion-MNIST with two saved toy teachers, a hint on a map and one on a vector."""
    paths = save_teachers(tmp_path)
    members = ",".join(f"{{arch:fmnist_tiny,checkpoint:'{p}'}}" for p in paths)
    run = tmp_path / "run"
    proc = run_launch(
        [
            "method=fitnets",
            "method.hint_layer=[1,-2]",
            "method.guided_layer=[1,-2]",
            "teachers=none",
            f"teachers.members=[{members}]",
            "data.train_subset=2000",
            "data.test_subset=1000",
            "trainer.epochs=2",
            "trainer.progress=off",
            "logger=none",
            f"hydra.run.dir={run}",
        ],
        meal_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["method"] == "fitnets" and result["status"] == "completed" and len(result["teachers"]) == 2
    assert result["top1"] > 40.0, "far above chance (10%)"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_hint"]) and r["train_hint_pair1"] > 0 for r in rows)
    assert rows[-1]["train_hint"] < rows[0]["train_hint"], "the regressors and the student close in on the hints"
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["method"]
    assert {"regressor.layers.0.0.weight", "regressor.layers.0.1.running_mean", "regressor.layers.1.weight"} <= set(
        state
    )
