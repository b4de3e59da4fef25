"""TappedModel: hooks only while tapping, plain state dicts, errors naming the taps key."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from torch import nn

from meal.errors import ConfigError
from meal.models import TappedModel, build_model, count_parameters


@pytest.fixture
def tiny() -> TappedModel:
    torch.manual_seed(0)
    return build_model("fmnist_tiny", num_classes=10, in_channels=1, image_size=28)


def test_logits_are_last_and_equal_plain_forward(tiny: TappedModel) -> None:
    tiny.eval()
    batch = torch.randn(3, 1, 28, 28)
    outputs = tiny.forward_with_taps(batch)
    assert len(outputs) == len(tiny.tap_names) + 1
    torch.testing.assert_close(outputs[-1], tiny(batch))
    torch.testing.assert_close(tiny(batch, with_taps=True)[-1], outputs[-1])


def test_nothing_is_kept_after_forward(tiny: TappedModel) -> None:
    batch = torch.randn(2, 1, 28, 28)
    tiny(batch)
    assert tiny._store.outputs is None
    outputs = tiny.forward_with_taps(batch)
    assert tiny._store.outputs is None
    first = weakref.ref(outputs[0])
    del outputs
    gc.collect()
    assert first() is None


def test_repeated_calls_are_consistent(tiny: TappedModel) -> None:
    tiny.eval()
    batch = torch.randn(2, 1, 28, 28)
    first = tiny.forward_with_taps(batch)
    tiny.forward_with_taps(torch.randn(5, 1, 28, 28))
    again = tiny.forward_with_taps(batch)
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b)


def test_failed_forward_stops_recording(tiny: TappedModel) -> None:
    with pytest.raises(RuntimeError):
        tiny.forward_with_taps(torch.randn(2, 3, 28, 28))
    assert tiny._store.outputs is None
    assert len(tiny.forward_with_taps(torch.randn(2, 1, 28, 28))) == 5


def test_custom_and_empty_taps() -> None:
    model = build_model("resnet18", 10, 3, 32, taps=["stage2.1.conv1", "head.pool"])
    assert model.tap_names == ["stage2.1.conv1", "head.pool"]
    shapes = [tuple(output.shape) for output in model.forward_with_taps(torch.randn(2, 3, 32, 32))]
    assert shapes == [(2, 128, 16, 16), (2, 512, 1, 1), (2, 10)]
    logits_only = build_model("fmnist_tiny", 10, 1, 28, taps=[])
    assert [output.shape for output in logits_only.forward_with_taps(torch.randn(2, 1, 28, 28))] == [(2, 10)]


def test_unknown_tap_names_the_taps_key() -> None:
    with pytest.raises(ConfigError) as error:
        build_model("resnet18", 10, 3, 32, taps=["stage1", "stage9"])
    message = str(error.value)
    assert message.startswith("student.taps: no module named 'stage9' in resnet18")
    assert "choose from: stem" in message
    with pytest.raises(ConfigError, match=r"^teachers\.members\.2\.taps: no module named 'x'"):
        build_model("fmnist_mlp", 10, 1, 28, taps=["x"], key="teachers.members.2.arch")


def test_duplicate_tap_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^student\.taps: module 'block1' is listed twice"):
        build_model("fmnist_tiny", 10, 1, 28, taps=["block1", "block1"])


def test_tap_returning_a_tuple_is_reported() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pair(x)[0])

    model = TappedModel(Net(), "pairnet", ["pair"], "student.taps")
    with pytest.raises(ConfigError, match=r"^student\.taps: module 'pair' of pairnet returned tuple"):
        model.forward_with_taps(torch.randn(2, 4))


def test_unknown_arch_names_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        build_model("resnet19", 10, 3, 32, key="teachers.members.0.arch")
    message = str(error.value)
    assert message.startswith("teachers.members.0.arch: unknown architecture 'resnet19'")
    assert "resnet18" in message
    assert "torchvision.<name>" in message


def test_bad_sizes_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^student\.arch: num_classes must be a positive integer"):
        build_model("fmnist_tiny", 0, 1, 28)


def test_state_dict_is_the_plain_network_state_dict(tiny: TappedModel) -> None:
    state = tiny.state_dict()
    assert list(state) == list(tiny.net.state_dict())
    plain = build_model("fmnist_tiny", 10, 1, 28).net
    plain.load_state_dict(state)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, state[key])
    fresh = build_model("fmnist_tiny", 10, 1, 28)
    fresh.load_state_dict(tiny.net.state_dict())
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_state_dict_round_trip_when_nested(tiny: TappedModel) -> None:
    def holder(student: TappedModel) -> nn.Module:
        return nn.ModuleDict({"student": student, "head": nn.Linear(3, 2)})

    state = holder(tiny).state_dict()
    assert "student.block1.0.weight" in state
    assert "head.weight" in state
    other = holder(build_model("fmnist_tiny", 10, 1, 28))
    result = other.load_state_dict(state)
    assert not result.missing_keys
    assert not result.unexpected_keys
    torch.testing.assert_close(other["student"].net.block1[0].weight, tiny.net.block1[0].weight)


def test_strict_load_reports_missing_keys(tiny: TappedModel) -> None:
    state = tiny.state_dict()
    del state["classifier.weight"]
    with pytest.raises(RuntimeError, match=r"classifier\.weight"):
        build_model("fmnist_tiny", 10, 1, 28).load_state_dict(state)


def test_deepcopy_has_its_own_taps(tiny: TappedModel) -> None:
    clone = copy.deepcopy(tiny)
    outputs = clone.forward_with_taps(torch.randn(2, 1, 28, 28))
    assert len(outputs) == 5
    assert tiny._store.outputs is None
    assert clone._store is not tiny._store


def test_count_parameters_skips_frozen(tiny: TappedModel) -> None:
    total = count_parameters(tiny)
    frozen = sum(parameter.numel() for parameter in tiny.net.block1.parameters())
    for parameter in tiny.net.block1.parameters():
        parameter.requires_grad_(False)
    assert count_parameters(tiny) == total - frozen
