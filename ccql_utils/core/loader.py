"""The on-device loader: one split held on the training device as uint8, batched and augmented there.

Data loading is where public CIFAR training scripts lose most of their time (a DataLoader with
PIL transforms per image); holding the few hundred MB of a subset on the GPU and augmenting a
whole batch with one gather makes the data path a small share of an epoch (benchmarks/).
"""
from __future__ import annotations

import functools
from typing import Iterator

import numpy as np
import torch

from .data import CIFAR100_MEAN, CIFAR100_STD


def crop_and_flip(padded: torch.Tensor, indices, dy, dx, flip) -> torch.Tensor:
    """Images `indices` [B] of `padded` (uint8 [N, 3, 40, 40]), each cropped to 32x32 at (dy, dx)
    [B] and mirrored where flip [B]: uint8 [B, 3, 32, 32]. One torch.take of flat indices, 2-3x
    faster than the equivalent 4-D advanced indexing."""
    side = padded.shape[-1]
    steps = torch.arange(32, device=padded.device)
    rows = dy[:, None] + steps                                           # [B, 32]
    cols = torch.where(flip[:, None], dx[:, None] + 31 - steps, dx[:, None] + steps)
    channels = torch.arange(3, device=padded.device) * (side * side)
    flat = ((indices * (3 * side * side))[:, None, None, None] + channels[None, :, None, None]
            + (rows * side)[:, None, :, None] + cols[:, None, None, :])
    return torch.take(padded, flat)


class DeviceLoader:
    """One split held on `device` as uint8, batched and augmented there: a random 32x32 crop of
    the 4-pixel zero-padded image and a horizontal flip with probability 1/2, then normalisation
    with the CIFAR-100 training mean/std. Epoch e's order, crops and flips come from a CPU generator
    seeded by (seed, e): the same on every device, and resuming needs no loader state."""

    PAD = 4

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device | str,
                 seed: int = 0, channels_last: bool = False):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, 32, 32):
            raise ValueError(f"images must be uint8 [N, 3, 32, 32], got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.device = torch.device(device)
        self.seed = int(seed)
        self.channels_last = channels_last
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.mean = torch.tensor(CIFAR100_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(CIFAR100_STD, device=self.device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def padded(self) -> torch.Tensor:
        """The images zero-padded for cropping, uint8 [N, 3, 40, 40] (made on first use: the test
        split never needs it)."""
        return torch.nn.functional.pad(self.images, (self.PAD,) * 4)

    def normalize(self, images_uint8: torch.Tensor, runs: int = 1) -> torch.Tensor:
        """uint8 [B * runs, 3, 32, 32] -> float32 [B, 3 * runs, 32, 32], standardised per channel
        (runs > 1: StackedLoader's batches, run n in channels 3n..3n+2)."""
        out = ((images_uint8.float() - self.mean) / self.std).view(-1, 3 * runs, 32, 32)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def epoch_plan(self, epoch: int):
        """Epoch `epoch`'s order and augmentation: (indices [N], dy [N], dx [N], flip [N]) on device."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))
        n = len(self.labels)
        order = torch.randperm(n, generator=gen)
        offsets = torch.randint(0, 2 * self.PAD + 1, (2, n), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        return tuple(t.to(self.device, non_blocking=True) for t in (order, *offsets, flip))

    def augmented_batch(self, indices, dy, dx, flip) -> torch.Tensor:
        """Crop-and-flip of images `indices` by one gather: uint8 [B, 3, 32, 32]."""
        return crop_and_flip(self.padded, indices, dy, dx, flip)

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented batches (float [B, 3, 32, 32], int64 [B]) of one epoch; a final
        batch of one image is dropped (BatchNorm needs two)."""
        indices, dy, dx, flip = self.epoch_plan(epoch)
        for start in range(0, len(indices), batch_size):
            sl = slice(start, start + batch_size)
            if len(indices[sl]) < 2:
                break
            yield self.normalize(self.augmented_batch(indices[sl], dy[sl], dx[sl], flip[sl])), \
                self.labels[indices[sl]]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All images in order, no augmentation."""
        for start in range(0, len(self.labels), batch_size):
            yield (self.normalize(self.images[start:start + batch_size]),
                   self.labels[start:start + batch_size])


class StackedLoader:
    """The batches of N DeviceLoaders of one length, stacked for stacked.py's N runs: images
    [B, 3N, 32, 32] (run n in channels 3n..3n+2) and labels [B, N].

    Each run's part is exactly its own loader's batch, made for all N runs by one gather from the
    runs' images concatenated (a second copy on the device): about 40 tensor operations per step
    instead of 40 per run (torch.profiler, 8 runs: 43 vs 8 x 39; the `stacked_data` table of
    benchmarks/bench.py's `stacked` part), which matters where launches bound a step.
    """

    def __init__(self, loaders: list[DeviceLoader]):
        if not loaders:
            raise ValueError("no loaders to stack")
        first = loaders[0]
        if len({len(loader) for loader in loaders}) != 1:
            raise ValueError(f"stacked runs need subsets of one size, got {[len(l) for l in loaders]}")
        if len({(loader.device, loader.channels_last) for loader in loaders}) != 1:
            raise ValueError("stacked loaders must share the device and memory format")
        self.loaders, self.runs, self.size, self.device = loaders, len(loaders), len(first), first.device
        self.images = torch.cat([loader.images for loader in loaders])      # [N * size, 3, 32, 32]
        self.labels = torch.cat([loader.labels for loader in loaders])      # [N * size]
        self.first_index = torch.arange(self.runs, device=self.device) * self.size  # [N]

    def __len__(self) -> int:
        return self.size

    @functools.cached_property
    def padded(self) -> torch.Tensor:
        """All runs' padded images, uint8 [N * size, 3, 40, 40] (on the first training epoch)."""
        return torch.nn.functional.pad(self.images, (DeviceLoader.PAD,) * 4)

    def _batch(self, images_uint8: torch.Tensor, indices: torch.Tensor):
        """(float [B, 3N, 32, 32], int64 [B, N]) from uint8 [B * N, 3, 32, 32] and indices [B, N]."""
        return self.loaders[0].normalize(images_uint8, self.runs), self.labels[indices]

    def train_batches(self, epoch: int, batch_size: int):
        """Each run's DeviceLoader.train_batches(epoch, batch_size), stacked."""
        plans = [loader.epoch_plan(epoch) for loader in self.loaders]
        order, dy, dx, flip = (torch.stack(parts, 1) for parts in zip(*plans))  # each [size, N]
        order = order + self.first_index
        for start in range(0, self.size, batch_size):
            sl = slice(start, start + batch_size)
            if len(order[sl]) < 2:
                break
            flat = [t[sl].flatten() for t in (order, dy, dx, flip)]         # batch-major [B * N]
            yield self._batch(crop_and_flip(self.padded, *flat), order[sl])

    def eval_batches(self, batch_size: int):
        """Each run's DeviceLoader.eval_batches(batch_size), stacked."""
        for start in range(0, self.size, batch_size):
            indices = (torch.arange(start, min(start + batch_size, self.size), device=self.device)[:, None]
                       + self.first_index)                                  # [B, N]
            yield self._batch(self.images[indices.flatten()], indices)
