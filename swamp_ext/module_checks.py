"""The checks a run makes of your module before training: one batch forward in both modes, its
output's shape and type, weights left alone, and whether its particles can be stacked."""

from __future__ import annotations

from typing import Any, Union

import torch

from ._core import _C
from .config import Config
from .datasets import Dataset
from .modules import _logits, _ModuleAdapter, call_module
from .pipeline import TorchData, _layout, _show


def _model_inputs(data: Union[Dataset, TorchData], n: int, device: str) -> Any:
    """The first n training samples as the model sees them (no augmentation)."""
    if isinstance(data, TorchData) and data.structured:
        x = data.first_inputs(n)
        if isinstance(x, dict):
            return {k: v.to(device) for k, v in x.items()}
        return type(x)(v.to(device) for v in x)
    x = (data.first_inputs(n) if isinstance(data, TorchData) else data.x_train[:n]).to(device)
    if x.dtype == torch.uint8:
        x = x.float() / 255
    if data.mean:
        shape = (1, len(data.mean)) + (1,) * (x.dim() - 2)
        mean = torch.tensor(data.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(data.std, dtype=x.dtype, device=x.device).view(shape)
        x = (x - mean) / std
    return x


def _batch_size(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    return _batch_size(next(iter(x.values())) if isinstance(x, dict) else x[0])


def check_module_on_data(adapter: _ModuleAdapter, config: Config,
                          data: Union[Dataset, TorchData]) -> None:
    """Runs a copy of the module on a few samples before the run: its errors and its output
    named here, not deep in training; decides whether its particles can be stacked. Random
    draws of the module (dropout) leave the caller's generators as they were."""
    dev = torch.device(config.device)
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        _check_module_forward(adapter, config, data)


def _check_module_forward(adapter: _ModuleAdapter, config: Config,
                          data: Union[Dataset, TorchData]) -> None:
    x = _model_inputs(data, 8, config.device)
    m = adapter.copy()
    who = adapter.class_name
    for train in (False, True):
        m.train(train)
        params = [(n, p, p._version) for n, p in m.named_parameters()]
        try:
            with torch.no_grad():
                out = call_module(m, x)
        except Exception as e:
            mode = "train" if train else "eval"
            raise RuntimeError(f"model: {who}.forward fails on a batch of {data.name} "
                               f"(inputs {_show(_layout(x))}, {mode} mode): "
                               f"{type(e).__name__}: {e}") from e
        now = dict(m.named_parameters())
        for n, p, v in params:
            if now.get(n) is not p:
                raise ValueError(f"model: {who}.forward replaces its parameter '{n}'; swamp_ext "
                                 "owns the weights during a run: compute with them, do not "
                                 "reassign them")
            if p._version != v:
                raise ValueError(f"model: {who}.forward changes its parameter '{n}' in place; "
                                 "swamp_ext owns the weights during a run: compute with them, "
                                 "do not modify them")
        logits = _logits(out)
        want = (_batch_size(x), data.num_classes)
        if tuple(logits.shape) != want:
            raise ValueError(f"model: {who} answers inputs {_show(_layout(x))} with "
                             f"{tuple(logits.shape)}; expected logits {want} ({data.name} has "
                             f"{data.num_classes} classes)")
        if not logits.is_floating_point():
            raise TypeError(f"model: {who} returns {logits.dtype} logits; expected floating point")
    most = max(_C.particles_per_round(config.to_cpp()))
    wants_stacked = config.particle_mode == "stacked" or (
        config.particle_mode in ("auto", "threads") and torch.device(config.device).type != "cpu")
    if most > 1 and wants_stacked:
        reason = adapter.check_stacking(x, config.precision, config.channels_last)
        if reason is not None and config.particle_mode == "stacked":
            raise ValueError(f"Config.particle_mode 'stacked': the particles of {who} cannot be "
                             f"stacked: {reason}; use 'sequential' or 'auto'")
