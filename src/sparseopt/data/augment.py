"""Batch-wise image augmentations on tensors, vectorised and device-agnostic.

They act on a whole batch ``(N, C, H, W)`` already on the training device, with one
``gather`` and no Python loop over samples — the standard CIFAR recipe (He et al.,
"Deep Residual Learning for Image Recognition", CVPR 2016: 4-pixel zero padding, random
32×32 crop, random horizontal flip) without torchvision.
"""

from __future__ import annotations

import torch

__all__ = ["random_crop_flip", "random_flip"]


def _randint(
    high: int, n: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """``n`` integers in ``[0, high)``, drawn on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a batch of images (N, C, H, W), got {shape}")


def random_crop_flip(
    x: torch.Tensor,
    padding: int = 4,
    generator: torch.Generator | None = None,
    *,
    flip: bool = True,
) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, per sample.

    Each image is padded by ``padding`` zeros on every side and a window of the original
    size is cut at a uniformly random offset in ``[0, 2·padding]²``; with probability 1/2
    (if ``flip``) it is mirrored left–right. The output has the shape, dtype and device of
    ``x``; ``x`` is not modified. Where the window leaves the image the value is 0 (in the
    units of ``x``: on normalised data that is the mean colour).

    Args:
        x: batch ``(N, C, H, W)``, any float or integer dtype, any device.
        padding: zero padding on each side (0: flip only).
        generator: optional ``torch.Generator`` (on the CPU or on ``x``'s device) for
            reproducible draws.
        flip: also apply random horizontal flips.

    Returns:
        The augmented batch.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
        >>> random_crop_flip(x, padding=2, generator=g).shape
        torch.Size([2, 3, 8, 8])
    """
    _check_batch(x)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"Invalid padding value: {padding!r} (must be an int >= 0)")
    n, c, h, w = x.shape
    if n == 0 or (padding == 0 and not flip):
        return x.clone()
    device = x.device
    p = padding
    top = _randint(2 * p + 1, n, device, generator)
    left = _randint(2 * p + 1, n, device, generator)
    mirror = (
        _randint(2, n, device, generator).bool()
        if flip
        else torch.zeros(n, dtype=torch.bool, device=device)
    )
    # Row/column indices into the padded image; a flip reverses the column order.
    rows = top[:, None] + torch.arange(h, device=device)  # (N, H)
    ar = torch.arange(w, device=device)
    cols = left[:, None] + torch.where(mirror[:, None], w - 1 - ar, ar)  # (N, W)
    # Instead of materialising the padded batch, gather from x and zero what falls outside.
    rows = rows - p
    cols = cols - p
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    flat = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (N, H, W)
    out = x.reshape(n, c, h * w).gather(2, flat.reshape(n, 1, h * w).expand(n, c, h * w))
    out = out.reshape(n, c, h, w)
    return out.masked_fill_(~valid[:, None], 0) if p else out


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip of each image of a batch ``(N, C, H, W)`` with probability 1/2.

    Example:
        >>> x = torch.rand(4, 1, 5, 5)
        >>> random_flip(x, torch.Generator().manual_seed(1)).shape
        torch.Size([4, 1, 5, 5])
    """
    return random_crop_flip(x, padding=0, generator=generator, flip=True)
