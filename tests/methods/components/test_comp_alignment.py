"""Adaptive-pooling alignment: hand examples, fast path vs reference."""

from __future__ import annotations

import math

import pytest
import torch

from meal.errors import ConfigError
from meal.methods.components.alignment import Aligner, align, align_reference

# one sample, two channels, 2x2 maps; flattened: ch0 = [1, 2, 3, 4], ch1 = [5, 0, -1, 8]
MAP = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 0.0], [-1.0, 8.0]]]], dtype=torch.float64)

# Windows of adaptive pooling L=4 -> n: [floor(i*L/n), ceil((i+1)*L/n)).
# n=2: [0,2) [2,4); n=3: [0,2) [1,3) [2,4); n=6: [0] [0,1] [1] [2] [2,3] [3]
HAND = {
    ("avg", 2): [(1.5 + 2.5) / 2, (3.5 + 3.5) / 2],
    ("avg", 3): [(1.5 + 2.5) / 2, (2.5 - 0.5) / 2, (3.5 + 3.5) / 2],
    ("avg", 6): [(1 + 5) / 2, (1.5 + 2.5) / 2, (2 + 0) / 2, (3 - 1) / 2, (3.5 + 3.5) / 2, (4 + 8) / 2],
    ("max", 2): [5.0, 8.0],
    ("max", 3): [5.0, 3.0, 8.0],
    ("max", 6): [5.0, 5.0, 2.0, 3.0, 8.0, 8.0],
    ("avg", 1): [(2.5 + 3.0) / 2],
    ("max", 1): [8.0],
}


@pytest.mark.parametrize(("pool", "out_dim"), sorted(HAND))
@pytest.mark.parametrize("fn", [align, align_reference])
def test_hand_example(fn, pool: str, out_dim: int) -> None:
    got = fn(MAP, out_dim, pool)
    assert got.shape == (1, out_dim)
    assert got[0].tolist() == pytest.approx(HAND[(pool, out_dim)], rel=1e-12)


def python_align(rows: list[list[list[float]]], out_dim: int, pool: str) -> list[list[float]]:
    """Pure-python MEAL alignment of (B, C, L) nested lists: pool each channel, then reduce channels."""
    result = []
    for channels in rows:
        length = len(channels[0])
        pooled = []
        for ch in channels:
            out = []
            for i in range(out_dim):
                lo = (i * length) // out_dim
                hi = math.ceil((i + 1) * length / out_dim)
                window = ch[lo:hi]
                out.append(sum(window) / len(window) if pool == "avg" else max(window))
            pooled.append(out)
        if pool == "avg":
            result.append([sum(col) / len(col) for col in zip(*pooled, strict=True)])
        else:
            result.append([max(col) for col in zip(*pooled, strict=True)])
    return result


SHAPES = [
    ((2, 3, 4, 4), 5),  # non-divisible downsampling
    ((2, 3, 4, 4), 16),  # identity length
    ((3, 5, 3, 5), 7),
    ((2, 4, 2, 3), 11),  # upsampling: out_dim > H*W
    ((2, 4, 1, 1), 5),  # a single position repeated
    ((1, 6, 3, 3), 1),  # batch of one keeps its batch axis
    ((2, 3, 7), 4),  # (B, C, L) already flattened
    ((3, 9), 4),  # 2-d input of another length: one channel
    ((3, 4), 10),  # 2-d input upsampled
]


@pytest.mark.parametrize(("shape", "out_dim"), SHAPES)
@pytest.mark.parametrize("pool", ["avg", "max"])
def test_fast_equals_reference_and_python(shape: tuple[int, ...], out_dim: int, pool: str) -> None:
    gen = torch.Generator().manual_seed(hash((shape, out_dim)) % 1000)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    fast = align(x, out_dim, pool)
    ref = align_reference(x, out_dim, pool)
    assert fast.shape == ref.shape == (shape[0], out_dim)
    assert torch.allclose(fast, ref, rtol=1e-12, atol=1e-12)
    channels = x.unsqueeze(1) if x.dim() == 2 else x.flatten(2)
    expected = torch.tensor(python_align(channels.tolist(), out_dim, pool), dtype=torch.float64)
    assert torch.allclose(fast, expected, rtol=1e-12, atol=1e-12)

    xf = x.float()
    assert torch.allclose(align(xf, out_dim, pool), align_reference(xf, out_dim, pool), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_fast_equals_reference_large_random(pool: str) -> None:
    gen = torch.Generator().manual_seed(7)
    for shape, out_dim in [((4, 64, 8, 8), 1000), ((4, 64, 8, 8), 37), ((2, 32, 16, 16), 10000)]:
        x = torch.randn(*shape, generator=gen)
        fast, ref = align(x, out_dim, pool), align_reference(x, out_dim, pool)
        assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-6)
        x64 = x.double()
        assert torch.allclose(align(x64, out_dim, pool), align_reference(x64, out_dim, pool), atol=1e-12)


@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("out_dim", [3, 12, 30])
def test_gradients_agree(pool: str, out_dim: int) -> None:
    gen = torch.Generator().manual_seed(out_dim)
    base = torch.randn(2, 5, 3, 4, generator=gen, dtype=torch.float64)  # continuous: no ties
    weights = torch.randn(2, out_dim, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (align, align_reference):
        x = base.clone().requires_grad_(True)
        (fn(x, out_dim, pool) * weights).sum().backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_logits_pass_unchanged(pool: str) -> None:
    logits = torch.randn(4, 10)
    for fn in (align, align_reference):
        out = fn(logits, 10, pool)
        assert torch.equal(out, logits)
        assert torch.equal(fn(logits, None, pool), logits)


def test_two_d_other_length_is_one_channel() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert align(x, 2, "avg").tolist() == [[1.5, 3.5]]
    assert align(x, 2, "max").tolist() == [[2.0, 4.0]]
    assert align(x, 3, "avg").tolist() == [[1.5, 2.5, 3.5]]


def test_none_flattens() -> None:
    x = torch.randn(2, 3, 2, 2)
    assert torch.equal(align(x, None), x.flatten(1))


def test_aligner_selects_and_aligns() -> None:
    outputs = [torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2), torch.randn(2, 10)]
    aligner = Aligner([20, 6, 10], pool="avg", blocks=[0, -1])
    assert aligner.blocks == [0, 2]
    assert aligner.selected_out_dims == [20, 10]
    got = aligner(outputs)
    assert len(got) == 2
    assert torch.allclose(got[0], align_reference(outputs[0], 20, "avg"))
    assert torch.equal(got[1], outputs[2])
    assert list(aligner.parameters()) == []

    ref = Aligner([20, 6, None], pool="max", reference=True)
    out = ref(outputs)
    assert [o.shape for o in out] == [(2, 20), (2, 6), (2, 10)]
    assert torch.equal(out[1], align(outputs[1], 6, "max"))
    with pytest.raises(ValueError):
        ref(outputs[:2])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"out_dims": [10], "pool": "mean"}, "method.pool"),
        ({"out_dims": [0]}, "method.out_dims"),
        ({"out_dims": []}, "method.out_dims"),
        ({"out_dims": [5, 10], "blocks": [2]}, "method.out_layer"),
        ({"out_dims": [5, 10], "blocks": [1, -1]}, "method.out_layer"),
        ({"out_dims": [5, 10], "blocks": []}, "method.out_layer"),
    ],
)
def test_aligner_config_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Aligner(**kwargs)
    assert info.value.key == key


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        align(torch.zeros(2, 3), 2, "median")
    with pytest.raises(ValueError):
        align(torch.zeros(3), 2)
