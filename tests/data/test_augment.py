"""Batched pad-crop-flip augmentation against torchvision's per-image reference, and normalisation."""

from __future__ import annotations

import itertools

import pytest
import torch

from meal.data.augment import AUGMENTATIONS, apply_params, normalize, reference_transform, sample_params


def _all_params(pad: int) -> torch.Tensor:
    """Every (dx, dy, flip) of the finite augmentation space, one per row."""
    offsets = range(2 * pad + 1)
    return torch.tensor(list(itertools.product(offsets, offsets, (0, 1))), dtype=torch.long)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("pad", [2, 4])
def test_apply_params_matches_reference_for_every_offset_and_flip(pad: int, channels: int) -> None:
    params = _all_params(pad)
    assert params.shape == ((2 * pad + 1) ** 2 * 2, 3)
    generator = torch.Generator().manual_seed(pad * 10 + channels)
    # Non-square images catch a swapped row/column axis.
    images = torch.randint(0, 256, (params.shape[0], channels, 9, 11), dtype=torch.uint8, generator=generator)

    out = apply_params(images, params, pad)

    assert out.shape == images.shape
    assert out.dtype == torch.uint8
    for i, (dx, dy, flip) in enumerate(params.tolist()):
        expected = reference_transform(images[i], dx, dy, bool(flip), pad)
        assert torch.equal(out[i], expected), f"mismatch at dx={dx} dy={dy} flip={flip}"


def test_offsets_are_columns_then_rows_into_the_zero_padded_image() -> None:
    image = torch.arange(1, 7, dtype=torch.uint8).view(1, 1, 2, 3)  # [[1, 2, 3], [4, 5, 6]]
    top_left = apply_params(image, torch.tensor([[0, 0, 0]]), pad=1)
    assert top_left[0, 0].tolist() == [[0, 0, 0], [0, 1, 2]]
    # dx=2: columns 2..4 of the padded image
    shifted_right = apply_params(image, torch.tensor([[2, 1, 0]]), pad=1)
    assert shifted_right[0, 0].tolist() == [[2, 3, 0], [5, 6, 0]]
    centre_flipped = apply_params(image, torch.tensor([[1, 1, 1]]), pad=1)
    assert centre_flipped[0, 0].tolist() == [[3, 2, 1], [6, 5, 4]]
    reference = reference_transform(image[0], 2, 1, False, pad=1)
    assert reference[0].tolist() == [[2, 3, 0], [5, 6, 0]]


def test_apply_params_without_padding_only_flips_and_keeps_float_values() -> None:
    images = torch.rand(4, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    params = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0]])
    out = apply_params(images, params, pad=0)
    assert out.dtype == torch.float32
    assert torch.equal(out[0], images[0])
    assert torch.equal(out[1], images[1].flip(-1))
    assert torch.equal(out[2], images[2].flip(-1))
    assert torch.equal(out[3], images[3])


@pytest.mark.parametrize("pad", [2, 4])
def test_sample_params_ranges(pad: int) -> None:
    n = 4000
    params = sample_params(n, "pad_crop_flip", pad, torch.Generator().manual_seed(0))
    assert params.shape == (n, 3)
    assert params.dtype == torch.long
    for column in (0, 1):
        assert sorted(params[:, column].unique().tolist()) == list(range(2 * pad + 1))
    assert sorted(params[:, 2].unique().tolist()) == [0, 1]
    # dx and dy are drawn independently of each other
    assert not torch.equal(params[:, 0], params[:, 1])


@pytest.mark.parametrize("pad", [0, 2, 4])
def test_sample_params_none_gives_centre_offsets(pad: int) -> None:
    params = sample_params(50, "none", pad, torch.Generator().manual_seed(0))
    assert params.tolist() == [[pad, pad, 0]] * 50


def test_sample_params_flip_only_and_crop_only() -> None:
    flips = sample_params(500, "flip", 4, torch.Generator().manual_seed(0))
    assert (flips[:, :2] == 4).all()
    assert sorted(flips[:, 2].unique().tolist()) == [0, 1]
    crops = sample_params(500, "pad_crop", 4, torch.Generator().manual_seed(0))
    assert (crops[:, 2] == 0).all()
    assert crops[:, :2].min() == 0
    assert crops[:, :2].max() == 8


def test_sample_params_is_a_function_of_the_generator_state() -> None:
    first = sample_params(64, "pad_crop_flip", 4, torch.Generator().manual_seed(5))
    again = sample_params(64, "pad_crop_flip", 4, torch.Generator().manual_seed(5))
    other = sample_params(64, "pad_crop_flip", 4, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_augmentation_names() -> None:
    assert set(AUGMENTATIONS) == {"none", "flip", "pad_crop", "pad_crop_flip"}


def test_normalize_equals_hand_computation() -> None:
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (3, 2, 4, 5), dtype=torch.uint8, generator=generator)
    original = images.clone()
    mean = torch.tensor([0.25, 0.5])
    std = torch.tensor([0.5, 0.125])

    out = normalize(images, mean, std)

    assert out.dtype == torch.float32
    assert out.shape == images.shape
    assert torch.equal(images, original)  # the uint8 input is left alone
    for b, c, h, w in itertools.product(range(3), range(2), range(4), range(5)):
        expected = (int(images[b, c, h, w]) / 255.0 - float(mean[c])) / float(std[c])
        assert out[b, c, h, w].item() == pytest.approx(expected, abs=1e-6)
    white = torch.full((1, 2, 1, 1), 255, dtype=torch.uint8)
    assert normalize(white, mean, std).flatten().tolist() == [1.5, 4.0]
