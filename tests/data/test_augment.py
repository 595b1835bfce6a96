"""Batch-wise random crop + flip: each output is a shifted, possibly mirrored, zero-padded crop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparseopt.data.augment import random_crop_flip, random_flip


def candidates(img: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop of the padded image, and its mirror image (the reference, with loops)."""
    _, h, w = img.shape
    padded = F.pad(img, (padding,) * 4)
    out = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top : top + h, left : left + w]
            out += [crop, crop.flip(-1)]
    return out


@pytest.mark.parametrize(("shape", "padding"), [((16, 3, 8, 8), 2), ((9, 1, 5, 7), 3)])
def test_outputs_are_crops_of_padded_inputs(shape: tuple[int, ...], padding: int) -> None:
    x = torch.randn(shape)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=padding, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    for img, res in zip(x, out, strict=True):
        assert any(torch.equal(res, c) for c in candidates(img, padding))


def test_random_and_reproducible() -> None:
    x = torch.randn(64, 3, 8, 8)
    x0 = x.clone()
    a = random_crop_flip(x, 4, torch.Generator().manual_seed(1))
    b = random_crop_flip(x, 4, torch.Generator().manual_seed(1))
    c = random_crop_flip(x, 4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    unchanged = sum(torch.equal(a[i], x[i]) for i in range(64))
    assert unchanged < 16  # most images moved (identity has probability 1/162)
    assert torch.equal(x, x0)  # the input is not modified in place


def test_flip_only() -> None:
    x = torch.randn(200, 2, 4, 6)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    assert bool((same | mirrored).all())
    assert 60 < int(mirrored.sum()) < 140
    no_flip = random_crop_flip(x, padding=0, flip=False)
    assert torch.equal(no_flip, x) and no_flip.data_ptr() != x.data_ptr()


def test_integer_images_and_empty_batch() -> None:
    x = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(3))
    assert out.dtype == torch.uint8
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0}
    empty = torch.zeros(0, 3, 6, 6)
    assert random_crop_flip(empty).shape == (0, 3, 6, 6)


@pytest.mark.parametrize("padding", [-1, 1.5, True])
def test_invalid_padding(padding: object) -> None:
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(torch.zeros(2, 1, 4, 4), padding=padding)


def test_needs_a_batch_of_images() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_crop_flip(torch.zeros(3, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batch_with_cpu_generator() -> None:
    x = torch.randn(8, 3, 8, 8, device="cuda")
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, 4, g)
    ref = random_crop_flip(x.cpu(), 4, torch.Generator().manual_seed(0))
    assert out.device == x.device
    assert torch.equal(out.cpu(), ref)
