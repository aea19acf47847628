"""Plain PyTorch versions of the C++ models: same parameter and buffer names, same outputs.

They let results be used without swamp_ext (``swamp_ext.models.to_torch``). Keep them in step with
csrc/models/: python_tests/test_models.py compares every model's outputs with the C++ ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["build"]


def _conv(i: int, o: int, k: int, stride: int = 1, pad: int = 0) -> nn.Conv2d:
    return nn.Conv2d(i, o, k, stride=stride, padding=pad, bias=False)


class LeNet300100(nn.Module):
    def __init__(self, shape: Sequence[int], classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(math.prod(shape), 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class LeNet5(nn.Module):
    def __init__(self, shape: Sequence[int], classes: int) -> None:
        super().__init__()
        c, h, w = shape
        self.conv1 = nn.Conv2d(c, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class ConvNet(nn.Module):
    def __init__(self, shape: Sequence[int], classes: int, widths: Sequence[int]) -> None:
        super().__init__()
        c, h, w = shape
        self.n = 2 * len(widths)
        i = 0
        for width in widths:
            for _ in range(2):
                i += 1
                setattr(self, f"conv{i}", _conv(c, width, 3, 1, 1))
                setattr(self, f"bn{i}", nn.BatchNorm2d(width))
                c = width
            h, w = h // 2, w // 2
        self.fc1 = nn.Linear(c * h * w, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.n + 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            if i % 2 == 0:
                x = F.max_pool2d(x, 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class BasicBlock(nn.Module):
    def __init__(self, i: int, o: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(i, o, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(o)
        self.conv2 = _conv(o, o, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(o)
        self.shortcut = stride != 1 or i != o
        if self.shortcut:
            self.shortcut_conv = _conv(i, o, 1, stride, 0)
            self.shortcut_bn = nn.BatchNorm2d(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        s = self.shortcut_bn(self.shortcut_conv(x)) if self.shortcut else x
        return F.relu(h + s)


class WideBlock(nn.Module):
    def __init__(self, i: int, o: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(i)
        self.conv1 = _conv(i, o, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(o)
        self.conv2 = _conv(o, o, 3, 1, 1)
        self.shortcut = stride != 1 or i != o
        if self.shortcut:
            self.shortcut_conv = _conv(i, o, 1, stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        h = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return h + (self.shortcut_conv(o) if self.shortcut else x)


def _stage(block: type, i: int, o: int, n: int, stride: int) -> nn.ModuleList:
    return nn.ModuleList([block(i if j == 0 else o, o, stride if j == 0 else 1) for j in range(n)])


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


class ResNetCifar(nn.Module):
    def __init__(self, shape: Sequence[int], classes: int, depth: int) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = _conv(shape[0], 16, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(BasicBlock, 16, 16, n, 1)
        self.layer2 = _stage(BasicBlock, 16, 32, n, 2)
        self.layer3 = _stage(BasicBlock, 32, 64, n, 2)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3):
            for b in stage:
                x = b(x)
        return self.fc(_pool(x))


class ResNet18(nn.Module):
    def __init__(self, shape: Sequence[int], classes: int, imagenet: bool) -> None:
        super().__init__()
        self.imagenet = imagenet
        self.conv1 = _conv(shape[0], 64, 7, 2, 3) if imagenet else _conv(shape[0], 64, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _stage(BasicBlock, 64, 64, 2, 1)
        self.layer2 = _stage(BasicBlock, 64, 128, 2, 2)
        self.layer3 = _stage(BasicBlock, 128, 256, 2, 2)
        self.layer4 = _stage(BasicBlock, 256, 512, 2, 2)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.imagenet:
            x = F.max_pool2d(x, 3, 2, 1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for b in stage:
                x = b(x)
        return self.fc(_pool(x))


_M = -1
_VGG = {
    "vgg11": [64, _M, 128, _M, 256, 256, _M, 512, 512, _M, 512, 512, _M],
    "vgg13": [64, 64, _M, 128, 128, _M, 256, 256, _M, 512, 512, _M, 512, 512, _M],
    "vgg16": [64, 64, _M, 128, 128, _M, 256, 256, 256, _M, 512, 512, 512, _M, 512, 512, 512, _M],
    "vgg19": [64, 64, _M, 128, 128, _M, 256, 256, 256, 256, _M, 512, 512, 512, 512, _M, 512, 512,
              512, 512, _M],
}


class VGG(nn.Module):
    def __init__(self, shape: Sequence[int], classes: int, plan: Sequence[int]) -> None:
        super().__init__()
        c, hw = shape[0], min(shape[1], shape[2])
        self.pools: list[int] = []
        for v in plan:
            if v == _M:
                if hw >= 2:
                    self.pools[-1] += 1
                    hw //= 2
                continue
            i = len(self.pools) + 1
            setattr(self, f"conv{i}", _conv(c, v, 3, 1, 1))
            setattr(self, f"bn{i}", nn.BatchNorm2d(v))
            self.pools.append(0)
            c = v
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, pools in enumerate(self.pools, 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            for _ in range(pools):
                x = F.max_pool2d(x, 2)
        return self.fc(_pool(x))


class WideResNet(nn.Module):
    def __init__(self, shape: Sequence[int], classes: int, depth: int, k: int) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = _conv(shape[0], 16, 3, 1, 1)
        self.layer1 = _stage(WideBlock, 16, 16 * k, n, 1)
        self.layer2 = _stage(WideBlock, 16 * k, 32 * k, n, 2)
        self.layer3 = _stage(WideBlock, 32 * k, 64 * k, n, 2)
        self.bn = nn.BatchNorm2d(64 * k)
        self.fc = nn.Linear(64 * k, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in (self.layer1, self.layer2, self.layer3):
            for b in stage:
                x = b(x)
        return self.fc(_pool(F.relu(self.bn(x))))


Builder = Callable[[Sequence[int], int], nn.Module]
_BUILDERS: dict[str, Builder] = {
    "lenet_300_100": LeNet300100,
    "lenet5": LeNet5,
    "conv2": lambda s, c: ConvNet(s, c, [64]),
    "conv4": lambda s, c: ConvNet(s, c, [64, 128]),
    "conv4_small": lambda s, c: ConvNet(s, c, [32, 64]),
    "conv6": lambda s, c: ConvNet(s, c, [64, 128, 256]),
    "resnet20": lambda s, c: ResNetCifar(s, c, 20),
    "resnet32": lambda s, c: ResNetCifar(s, c, 32),
    "resnet56": lambda s, c: ResNetCifar(s, c, 56),
    "resnet18": lambda s, c: ResNet18(s, c, False),
    "resnet18_imagenet": lambda s, c: ResNet18(s, c, True),
    **{name: (lambda p: lambda s, c: VGG(s, c, p))(plan) for name, plan in _VGG.items()},
}


def build(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """An untrained PyTorch module of the named architecture."""
    m = re.fullmatch(r"wrn(\d+)_(\d+)", name)
    if m:
        return WideResNet(input_shape, num_classes, int(m.group(1)), int(m.group(2)))
    if name not in _BUILDERS:
        raise ValueError(f"no PyTorch version of model {name!r}; known: {', '.join(_BUILDERS)}")
    return _BUILDERS[name](list(input_shape), num_classes)
