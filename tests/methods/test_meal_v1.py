"""MEAL v1: adversarial modes, published objective, teacher selection and frozen teachers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from meal.app import train
from meal.data.batch import Batch
from meal.errors import ConfigError
from meal.methods import Teacher, build_method
from meal.methods.meal_v1 import MealV1, MealV1MethodConfig
from meal.models import build_model
from meal.teachers import freeze
from tests.conftest import compose_config
from tests.softlabels.toy import SIZE, save_teachers

BLOCKWISE = {
    "out_layer": [0, 1, 2, 3, 4],
    "out_dims": [196, 49, 9, 32, 10],
    "gamma": [0.001, 0.01, 0.05, 0.1, 1.0],
    "eta": [1.0, 0.5, 1.0, 1.0, 2.0],
}


def make_method(seed: int = 0, n_teachers: int = 3, **overrides: object) -> MealV1:
    torch.manual_seed(seed)
    cfg = OmegaConf.structured(MealV1MethodConfig(**{**BLOCKWISE, **overrides}))
    student = build_model("fmnist_tiny", 10, 1, 28)
    archs = ["fmnist_cnn", "fmnist_cnn_wide", "fmnist_tiny", "fmnist_cnn"][:n_teachers]
    teachers = [Teacher(f"t{i}", freeze(build_model(a, 10, 1, 28))) for i, a in enumerate(archs)]
    return build_method(cfg, student, teachers, 10, seed)


def batch(n: int = 8, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(n))


def adversarial_grads(method: MealV1, x: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    method.zero_grad(set_to_none=True)
    method.training_step(x, 0).loss.backward()
    student = {k: p.grad.clone() for k, p in method.student.named_parameters() if p.grad is not None}
    disc = {k: p.grad.clone() for k, p in method.discriminators.named_parameters()}
    return student, disc


def test_grl_reverses_exactly_the_students_adversarial_gradient() -> None:
    zero_gamma = {"gamma": [0.0] * 5}
    grl, joint = make_method(adversarial="grl", **zero_gamma), make_method(adversarial="joint", **zero_gamma)
    joint.load_state_dict(grl.state_dict())
    joint.selector.load_state_dict(grl.selector.state_dict())
    x = batch()
    s_grl, d_grl = adversarial_grads(grl, x)
    s_joint, d_joint = adversarial_grads(joint, x)
    assert s_grl.keys() == s_joint.keys() and len(s_grl) > 0
    for k in s_grl:
        torch.testing.assert_close(s_grl[k], -s_joint[k], rtol=1e-5, atol=1e-7)
    for k in d_grl:  # the discriminators descend their own loss in both modes
        torch.testing.assert_close(d_grl[k], d_joint[k])
    assert any(v.abs().sum() > 0 for v in s_grl.values())


def test_joint_reproduces_the_published_objective() -> None:
    method = make_method(adversarial="joint", teacher_selection="random")
    x = batch()
    probe = copy.deepcopy(method.selector)
    chosen = probe.select()[0]
    loss = method.training_step(x, 0).loss

    def aligned(model: torch.nn.Module) -> list[torch.Tensor]:
        outs = model.forward_with_taps(x.x)
        feats = []
        for out, dim in zip(outs, BLOCKWISE["out_dims"]):
            flat = out.reshape(out.shape[0], out.shape[1] if out.dim() > 2 else 1, -1)
            if flat.shape[-1] != dim:
                flat = F.adaptive_avg_pool1d(flat, dim)  # per channel, then the channel mean (published order)
            feats.append(flat.mean(dim=1))
        return feats

    s_feats = aligned(method.student)
    with torch.no_grad():
        t_feats = aligned(method.teacher_list[chosen].model)
    expected = 0.0
    for i, (s, t) in enumerate(zip(s_feats, t_feats)):
        soft_ce = -(t.softmax(dim=1) * s.log_softmax(dim=1)).sum(dim=1).mean()
        d = method.discriminators[i]
        logits = d(torch.cat([s, t]))
        labels = torch.cat([torch.tensor([[1.0, 0.0]]).expand(len(s), 2), torch.tensor([[0.0, 1.0]]).expand(len(t), 2)])
        bce = -(labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)).mean()
        expected = expected + BLOCKWISE["gamma"][i] * soft_ce + BLOCKWISE["eta"][i] * bce
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_discriminator_sizes_follow_k() -> None:
    method = make_method()
    widths = [tuple(m.weight.shape) for d in method.discriminators for m in (d.fc1, d.fc2, d.fc3)]
    assert widths[:3] == [(98, 196), (49, 98), (2, 49)]
    assert widths[-3:] == [(5, 10), (2, 5), (2, 2)]


def test_alternating_uses_separate_optimizers() -> None:
    method = make_method(adversarial="alternating")
    (extra,) = method.extra_optimizers()
    assert not extra.stepped_by_engine
    d_params = {id(p) for p in method.discriminators.parameters()}
    assert {id(p) for g in extra.optimizer.param_groups for p in g["params"]} == d_params
    assert not d_params & {id(p) for p in method.student.parameters()}
    before_d = [p.detach().clone() for p in method.discriminators.parameters()]
    before_s = [p.detach().clone() for p in method.student.parameters()]
    out = method.training_step(batch(), 0)
    assert any(not torch.equal(a, b) for a, b in zip(before_d, method.discriminators.parameters())), (
        "the discriminator step happens inside training_step"
    )
    assert all(torch.equal(a, b) for a, b in zip(before_s, method.student.parameters())), (
        "the student is untouched until the engine steps its own optimizer"
    )
    assert out.logs["d_loss"] > 0 and out.logs["adv_loss"] > 0
    out.loss.backward()
    assert all(p.grad is not None for p in method.student.parameters() if p.requires_grad)


def test_none_mode_has_no_discriminators() -> None:
    method = make_method(adversarial="none")
    assert len(method.discriminators) == 0 and method.extra_optimizers() == []
    out = method.training_step(batch(), 0)
    assert float(out.logs["sim_loss"]) == pytest.approx(float(out.loss.detach()))


def test_random_selection_is_reproducible_and_mean_uses_all() -> None:
    a, b = make_method(seed=5), make_method(seed=5)
    seq_a = [a.selector.select()[0] for _ in range(200)]
    seq_b = [b.selector.select()[0] for _ in range(200)]
    assert seq_a == seq_b and set(seq_a) == {0, 1, 2}
    assert make_method(teacher_selection="mean").selector.select() == [0, 1, 2]


def test_teachers_are_bit_identical_after_a_training_step() -> None:
    method = make_method(adversarial="grl")
    method.train()
    snapshot = [copy.deepcopy(t.model.state_dict()) for t in method.teacher_list]
    optimizer = torch.optim.SGD(method.student.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        method.training_step(batch(16), 0).loss.backward()
        optimizer.step()
    for teacher, before in zip(method.teacher_list, snapshot):
        assert not teacher.model.training
        after = teacher.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "teacher weights or BN buffers changed"
        assert any("running_mean" in k for k in before)


def test_out_of_range_out_layer_is_rejected_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"^method\.out_layer\[1\]: index 5 is out of range"):
        make_method(out_layer=[0, 5], out_dims=[10, 10], gamma=[1.0, 1.0], eta=[1.0, 1.0])
    make_method(out_layer=[-5, -1], out_dims=[196, 10], gamma=[1.0, 1.0], eta=[1.0, 1.0])


def test_method_state_round_trip_continues_teacher_sequence(tmp_path: Path) -> None:
    a = make_method(seed=3)
    for _ in range(7):
        a.selector.select()
    torch.save(a.method_state(), tmp_path / "m.pt")
    b = make_method(seed=3)
    b.load_method_state(torch.load(tmp_path / "m.pt", weights_only=False))
    assert [a.selector.select() for _ in range(20)] == [b.selector.select() for _ in range(20)]
    assert all(torch.equal(p, q) for p, q in zip(a.discriminators.parameters(), b.discriminators.parameters()))


@pytest.mark.slow
def test_epochs_per_teacher_stretches_run_and_schedule(tmp_path: Path) -> None:
    paths = save_teachers(tmp_path)
    members = ",".join(f"{{arch:fmnist_tiny,checkpoint:'{p}'}}" for p in paths)
    run = tmp_path / "run"
    overrides = [
        "method=meal_v1",
        "method.epochs_per_teacher=true",
        "student=fmnist_tiny",
        "teachers=none",
        f"teachers.members=[{members}]",
        "data=synthetic",
        "data.in_channels=1",
        f"data.image_size={SIZE}",
        "data.train_size=64",
        "data.test_size=16",
        "data.batch_size=16",
        "data.mean=[0.5]",
        "data.std=[0.25]",
        "logger=none",
        "trainer.progress=off",
        "trainer.epochs=1",
        "schedule=multistep",
        "schedule.milestones=[0.5]",
        "schedule.decay=0.1",
        "optim.lr=0.1",
    ]
    result = train(compose_config(overrides, run), run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert result.epochs == 2 and [r["epoch"] for r in rows] == [1, 2], "one epoch per teacher"
    # the milestone at epoch 0.5 of the one-teacher schedule falls at epoch 1 of the two-teacher run
    assert rows[0]["lr"] == pytest.approx(0.1) and rows[1]["lr"] == pytest.approx(0.01)
