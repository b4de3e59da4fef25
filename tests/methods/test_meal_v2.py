"""MEAL V2 against hand computations: no hard labels, its own discriminator LR, online == cached."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import ValidationError
from torch import Tensor

from meal.app import train
from meal.data import Batch, build_data
from meal.engine.schedule import resolve_epochs
from meal.engine.trainer import Trainer
from meal.errors import MealError
from meal.methods import build_method
from meal.methods.meal_v2 import MealV2, cutmix
from meal.models import build_model
from tests.conftest import compose_config
from tests.softlabels.toy import SIZE, data_cfg, method_cfg, run_cfg, save_teachers, toy_data, toy_teachers


def student(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("fmnist_tiny", 10, 1, SIZE)


def a_batch(n: int = 6, seed: int = 3) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(n, 1, SIZE, SIZE, generator=g),
        torch.randint(0, 10, (n,), generator=g),
        torch.arange(n),
        torch.zeros(n, 3, dtype=torch.long),
    )


def sigmoid_bce(logits: Tensor, target: Tensor) -> Tensor:
    p = 1.0 / (1.0 + torch.exp(-logits))
    return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()


def hand_discriminator(d: torch.nn.Module, rows: Tensor) -> Tensor:
    h = torch.clamp(rows @ d.fc1.weight.T + d.fc1.bias, min=0)
    h = torch.clamp(h @ d.fc2.weight.T + d.fc2.bias, min=0)
    return h @ d.fc3.weight.T + d.fc3.bias


def hand_kd(s: Tensor, teacher_logits: list[Tensor], tau: float, loss: str) -> Tensor:
    probs = [torch.exp(t / tau) / torch.exp(t / tau).sum(1, keepdim=True) for t in teacher_logits]
    p = sum(probs) / len(probs)
    log_q = s / tau - torch.log(torch.exp(s / tau).sum(1, keepdim=True))
    if loss == "ce":
        return -(p * log_q).sum(1).mean()
    return (p * (torch.log(p) - log_q)).sum(1).mean() * tau**2


@pytest.mark.parametrize(
    ("mode", "tau", "loss"), [("grl", 1.0, "ce"), ("joint", 2.0, "kl"), ("none", 3.0, "ce"), ("alternating", 1.0, "ce")]
)
def test_loss_equals_hand_computation(mode: str, tau: float, loss: str) -> None:
    teachers = toy_teachers((1, 2, 3))
    eta = 0.5  # the adversarial term's weight
    method = MealV2(method_cfg(adversarial=mode, temperature=tau, loss=loss, eta=eta), student(), teachers, 10)
    method.train()
    batch = a_batch()
    out = method.training_step(batch, 0)
    with torch.no_grad():
        s = method.student(batch.x)
        t = [teacher.model(batch.x) for teacher in teachers]
        kd = hand_kd(s, t, tau, loss)
        n = batch.x.shape[0]
        if mode == "none":
            expected = kd
            assert len(method.discriminators) == 0 and method.extra_optimizers() == []
        elif mode == "alternating":  # the discriminator stepped first; the student gets the generator loss
            scores = hand_discriminator(method.discriminators[0], s)
            expected = kd + eta * sigmoid_bce(scores, torch.tensor([0.0, 1.0]).expand(n, 2))
        else:
            rows = torch.cat([s, sum(t) / len(t)])
            labels = torch.cat([torch.tensor([1.0, 0.0]).expand(n, 2), torch.tensor([0.0, 1.0]).expand(n, 2)])
            expected = kd + eta * sigmoid_bce(hand_discriminator(method.discriminators[0], rows), labels)
    torch.testing.assert_close(out.loss.detach(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logs["kd_loss"], kd, atol=1e-5, rtol=1e-5)


def test_published_defaults_compose() -> None:
    cfg = compose_config(["method=meal_v2"]).method
    assert (cfg.K, cfg.d_lr, cfg.d_schedule, cfg.temperature, cfg.soft_labels) == (8, 1e-4, "constant", 1.0, "online")
    method = build_method(cfg, student(), toy_teachers(), 10)
    assert method.discriminators[0].widths == (10, 4, 4, 2), "K=8 with a floor of 4 on the hidden widths"
    assert method.extra_optimizers()[0].optimizer.param_groups[0]["lr"] == 1e-4
    with pytest.raises(ValidationError, match=r"Invalid value 'mse', expected one of \[ce, kl\]") as info:
        method_cfg(loss="mse")  # the schema refuses it before a method can be built
    assert info.value.full_key == "loss"


@pytest.mark.parametrize("cut", [0.0, 1.0])
def test_permuting_labels_leaves_loss_and_gradients_unchanged(cut: float) -> None:
    method = MealV2(method_cfg(cutmix=cut), student(), toy_teachers(), 10)
    method.train()
    batch = a_batch(8)
    results = []
    for labels in (batch.y, batch.y[torch.randperm(8)], torch.full((8,), 7), None):
        m = copy.deepcopy(method)
        out = m.training_step(batch._replace(y=labels), 0)
        out.loss.backward()
        results.append((out.loss.detach(), [p.grad.clone() for p in m.student.parameters()]))
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, results[0][1]))


def _trainer(tmp_path: Path, overrides: list[str]) -> Trainer:
    cfg = compose_config(
        [
            "method=meal_v2",
            "data=synthetic",
            "data.in_channels=1",
            f"data.image_size={SIZE}",
            "data.train_size=32",
            "data.test_size=16",
            "data.batch_size=16",
            "data.mean=[0.5]",
            "data.std=[0.25]",
            "teachers=none",
            "logger=none",
            "optim.lr=0.1",
            "trainer.progress=off",
            *overrides,
        ],
        tmp_path,
    )
    data = build_data(cfg.data, tmp_path, 0, torch.device("cpu"))
    method = build_method(cfg.method, student(), toy_teachers(), 10)
    return Trainer(cfg, method, data, tmp_path, torch.device("cpu"), resolve_epochs(cfg.trainer, cfg.schedule))


@pytest.mark.slow
@pytest.mark.parametrize("d_schedule", ["constant", "student"])
def test_discriminator_keeps_its_own_lr_through_schedule_steps(tmp_path: Path, d_schedule: str) -> None:
    trainer = _trainer(tmp_path, ["schedule=meal_v2_step", "trainer.epochs=180", f"method.d_schedule={d_schedule}"])
    d_opt = trainer.extras[0].optimizer
    for epoch, mult in ((0.0, 1.0), (99.5, 1.0), (100.0, 0.1), (179.9, 0.1)):
        lr = trainer.set_learning_rates(epoch)
        assert lr == pytest.approx(0.1 * mult)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * mult)
        want = 1e-4 if d_schedule == "constant" else 1e-4 * mult
        assert d_opt.param_groups[0]["lr"] == pytest.approx(want), "never the student's LR"


def test_discriminator_lr_after_real_training_steps(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, ["schedule=cosine", "trainer.epochs=2", "method.d_lr=3e-4"])
    before = [p.detach().clone() for p in trainer.method.discriminators.parameters()]
    state = trainer.fit()
    assert state.global_step == 4
    assert trainer.optimizer.param_groups[0]["lr"] < 0.1
    assert trainer.extras[0].optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.method.discriminators.parameters()))


def test_online_and_cached_give_the_same_loss(tmp_path: Path) -> None:
    dcfg = data_cfg(augment="pad_crop_flip", pad=1, train_size=24)
    data = toy_data(dcfg)
    teachers = toy_teachers()
    online = MealV2(method_cfg(), student(), teachers, 10)
    cached = MealV2(method_cfg(soft_labels="cached", cache_dtype="float32"), student(), teachers, 10)
    with pytest.raises(MealError, match="prepare"):
        cached.training_step(next(iter(data.train)), 0)
    cached.prepare(data, run_cfg(dcfg, tmp_path))
    online.prepare(data, run_cfg(dcfg, tmp_path / "unused"))
    assert not (tmp_path / "unused").exists()
    for batch in data.train:
        a, b = online.training_step(batch, 0), cached.training_step(batch, 0)
        torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-5)


def test_cutmix_pastes_a_box_and_reports_its_area() -> None:
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 8, 8).contiguous()
    for seed in range(5):
        mixed, perm, lam = cutmix(x, 1.0, np.random.default_rng(seed))
        for i in range(6):
            pasted = mixed[i, 0] == perm[i]
            if perm[i] == i:
                continue
            rows, cols = pasted.nonzero(as_tuple=True)
            area = int(pasted.sum())
            assert area == 0 or area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1), "a box"
            assert lam == pytest.approx(1 - area / 64)
            assert torch.equal(mixed[i, 0][~pasted], x[i, 0][~pasted])


@pytest.mark.parametrize("soft_labels", ["online", "cached"])
def test_cutmix_targets(tmp_path: Path, soft_labels: str) -> None:
    dcfg = data_cfg(augment="flip", train_size=16, batch_size=8)
    data = toy_data(dcfg)
    teachers = toy_teachers()
    method = MealV2(
        method_cfg(cutmix=1.0, adversarial="none", soft_labels=soft_labels, cache_dtype="float32"),
        student(),
        teachers,
        10,
        seed=3,
    )
    method.prepare(data, run_cfg(dcfg, tmp_path))
    method.eval()
    batch = next(iter(data.train))
    mixed, perm, lam = cutmix(batch.x, 1.0, copy.deepcopy(method.rng))
    loss = method.training_step(batch, 0).loss
    with torch.no_grad():
        s = method.student(mixed)
        if soft_labels == "online":  # the teachers see the mixed images
            expected = hand_kd(s, [t.model(mixed) for t in teachers], 1.0, "ce")
        else:  # the cached targets of the two source images, mixed by area
            p = sum(torch.softmax(t.model(batch.x), 1) for t in teachers) / 2
            q = torch.log_softmax(s, 1)
            expected = -((lam * p + (1 - lam) * p[perm]) * q).sum(1).mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)


def test_cutmix_generator_state_is_checkpointed() -> None:
    method = MealV2(method_cfg(cutmix=0.5), student(), toy_teachers(), 10, seed=5)
    method.rng.random(3)
    state = method.method_state()
    expected = method.rng.random()
    other = MealV2(method_cfg(cutmix=0.5), student(), toy_teachers(), 10, seed=9)
    other.load_method_state(state)
    assert other.rng.random() == expected


@pytest.mark.slow
def test_cached_run_through_the_app_reuses_the_cache(tmp_path: Path) -> None:
    paths = save_teachers(tmp_path)
    members = ",".join(f"{{arch:fmnist_tiny,checkpoint:'{p}'}}" for p in paths)
    common = [
        "method=meal_v2",
        "method.soft_labels=cached",
        "data=synthetic",
        "data.in_channels=1",
        f"data.image_size={SIZE}",
        "data.train_size=48",
        "data.test_size=16",
        "data.batch_size=16",
        "data.mean=[0.5]",
        "data.std=[0.25]",
        "data.augment=flip",
        "teachers=none",
        f"teachers.members=[{members}]",
        "logger=none",
        "trainer.epochs=1",
        "trainer.progress=off",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.zoo={tmp_path / 'zoo'}",
    ]
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        result = train(compose_config([*common, f"seed={seed}"], run), run)
        assert result.status == "completed" and result.method == "meal_v2"
    keys = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(keys) == 1 and (keys[0] / "COMPLETE").exists()
    manifest = json.loads((keys[0] / "manifest.json").read_text())
    assert manifest["slots"] == 2 and manifest["num_samples"] == 48 and len(manifest["inputs"]["teachers"]) == 2


@pytest.mark.parametrize("mode", ["grl", "joint"])
def test_eta_weights_the_adversarial_term(mode: str) -> None:
    teachers = toy_teachers((1, 2, 3))
    batch = a_batch()
    parts = {}
    for eta in (1.0, 0.25):
        method = MealV2(method_cfg(adversarial=mode, eta=eta), student(), teachers, 10)
        method.train()
        out = method.training_step(batch, 0)
        parts[eta] = (out.loss.detach(), out.logs["kd_loss"])
    adv_full = parts[1.0][0] - parts[1.0][1]
    adv_quarter = parts[0.25][0] - parts[0.25][1]
    assert float(adv_full) > 0
    torch.testing.assert_close(adv_quarter, 0.25 * adv_full, atol=1e-5, rtol=1e-4)
