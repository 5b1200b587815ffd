"""Batches straight from tensors on the run's device, with batched augmentation.

No per-sample Python: a batch is gathered by one index operation and augmented by one
crop-gather and one flip on the whole batch. Randomness comes from a CPU generator
seeded per epoch, so a run is reproducible and resumable on any device.
"""

from __future__ import annotations

from typing import Iterator

import torch


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Pad-``pad`` random crop (zero padding) and random horizontal flip of a batch.

    Works on any dtype (uint8 keeps the copy small). ``x`` is ``N×C×H×W``.
    """
    n, c, h, w = x.shape
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(h, device=x.device))  # N×H
        cols = (dx[:, None] + torch.arange(w, device=x.device))  # N×W
        if flip:
            do_flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            cols = torch.where(do_flip[:, None], cols.flip(1), cols)
        # gather rows then columns: N×C×H×(W+2p) then N×C×H×W
        xp = xp.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
        return xp.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    if flip:
        do_flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        return torch.where(do_flip[:, None, None, None], x.flip(3), x)
    return x


class DeviceLoader:
    """Iterate over ``(images, labels)`` batches of tensors that already live on ``device``.

    ``images`` is uint8 ``N×C×H×W``; batches come out as float ``[0,1]`` (in
    ``channels_last`` when asked). Augmentation (``pad``-crop and flip) runs per batch on
    the device. Pass ``seed`` and ``epoch`` to make the order and augmentation reproducible.
    ``with_indices=True`` yields ``(images, labels, indices)`` instead, ``indices`` (int64, on
    the images' device) being each sample's row in ``images``; the order and augmentation are
    the same either way.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        crop_pad: int = 0,
        flip: bool = False,
        drop_last: bool = False,
        channels_last: bool = False,
        seed: int = 0,
        with_indices: bool = False,
    ) -> None:
        self.images = images
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.crop_pad = crop_pad
        self.flip = flip
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.seed = seed
        self.with_indices = with_indices
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.images.shape[0]
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        augment = self.crop_pad > 0 or self.flip
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            if augment:
                x = random_crop_flip(x, self.crop_pad, self.flip, g)
            x = x.float().div_(255)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.with_indices:
                yield x, self.labels[idx], idx
            else:
                yield x, self.labels[idx]
