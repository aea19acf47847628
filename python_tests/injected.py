"""Modules that misbehave on purpose, shared by the tests and the worker scripts they start."""

from __future__ import annotations

import torch
from torch import nn


class Poisoned(nn.Module):
    """Overflows on chosen training forwards (an fp16 overflow, injected): the forwards counted
    in `calls` (training mode only) whose number is in `poison` return infinite logits."""

    calls = 0
    poison: set = set()

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        out = self.fc2(torch.relu(self.fc1(x.flatten(1))))
        if self.training:
            Poisoned.calls += 1
            if Poisoned.calls in Poisoned.poison:
                out = out * float("inf")
        return out
