"""Pre-activation WideResNet (Zagoruyko & Komodakis, 2016) for 32x32 inputs.

WRN-d-k: depth d = 6n + 4 (n blocks per group), widths 16, 16k, 32k, 64k. WRN-28-10 with 100
classes has 36.5M parameters; WRN-10-1 and WRN-16-2 serve the small presets.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3, plus the shortcut: when the shape changes,
    a 1x1 convolution of the pre-activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(preact)
        out = F.relu(self.bn2(self.conv1(preact)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + residual


class WideResNet(nn.Module):
    """WideResNet-depth-widen_factor: images [B, 3, 32, 32] float -> outputs [B, num_classes]."""

    @staticmethod
    def check_arguments(depth: int, widen_factor: int, num_classes: int, dropout: float) -> None:
        """ValueError naming the first invalid argument (the run configuration asks here too)."""
        if int(depth) != depth or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, "
                             f"40, ...), got {depth}")
        if int(widen_factor) != widen_factor or widen_factor < 1:
            raise ValueError(f"width (widen_factor) must be a positive integer, got {widen_factor}")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 100,
                 dropout: float = 0.0):
        super().__init__()
        self.check_arguments(depth, widen_factor, num_classes, dropout)
        blocks_per_group = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.group1 = self._make_group(widths[0], widths[1], blocks_per_group, 1, dropout)
        self.group2 = self._make_group(widths[1], widths[2], blocks_per_group, 2, dropout)
        self.group3 = self._make_group(widths[2], widths[3], blocks_per_group, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_group(in_planes, out_planes, num_blocks, stride, dropout) -> nn.Sequential:
        layers = [WideBasicBlock(in_planes, out_planes, stride, dropout)]
        layers += [WideBasicBlock(out_planes, out_planes, 1, dropout) for _ in range(num_blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.group3(self.group2(self.group1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
