"""Turning a pruned dense module into one whose pruned layers compute sparse: ``sparsify``, and
the choice it makes per layer (``LayerChoice``)."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from .modules import SparseConv2d, SparseLinear, conv_refusal

__all__ = ["LayerChoice", "Sparse", "choices", "sparsify", "state_bytes"]

Sparse = Union[bool, str]  # True, False, "auto" or "2:4"

# auto: a layer goes sparse only where the sparse kernel took at most this share of the dense
# layer's time at every batch size measured (a margin for the noise of a busy machine)
AUTO_MARGIN = 0.9


@dataclass(frozen=True)
class LayerChoice:
    """What ``sparsify`` did with one prunable layer."""

    name: str  # the module's name, e.g. "fc1"
    kind: str  # "linear" or "conv2d"
    shape: tuple[int, ...]  # the dense weight's
    density: float  # nonzeros / entries of the weight
    sparse: bool  # computed by the sparse kernel
    reason: str  # why, in words
    # auto: batch size -> dense time / sparse time, measured on this machine
    speedup: dict[int, float] = field(default_factory=dict)


def _timings(speedup: dict[int, float]) -> str:
    return ", ".join(f"{v:.2f}x at batch {b}" for b, v in speedup.items())


def state_bytes(module: nn.Module) -> int:
    """Bytes of the module's state dict (parameters and buffers, as saved)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def choices(module: nn.Module) -> tuple[LayerChoice, ...]:
    """The per-layer choices ``sparsify`` recorded on ``module`` (empty if it was not made by
    sparsify)."""
    return tuple(getattr(module, "swamp_layers", ()))


def _kind(m: nn.Module) -> Optional[str]:
    # the exact torch layers, or subclasses that keep their forward (a subclass with its own
    # forward computes something else)
    if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
        return "linear"
    if isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward:
        return "conv2d"
    return None


def _per_call(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> float:
    """Seconds per call: the best of 5 timings of enough calls to fill about a millisecond."""
    fn(x)
    t0 = time.perf_counter()
    fn(x)
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, min(1000, int(1e-3 / once)))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(x)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def _input_shapes(module: nn.Module, names: Sequence[str], example_input: Any
                  ) -> dict[str, tuple[int, ...]]:
    """Each named layer's input shape without the batch dimension, from one forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    subs = dict(module.named_modules())
    for n in names:
        def hook(_m: nn.Module, args: tuple, n: str = n) -> None:
            if args and isinstance(args[0], torch.Tensor):
                shapes.setdefault(n, tuple(args[0].shape[1:]))
        handles.append(subs[n].register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            if isinstance(example_input, tuple):
                module(*example_input)
            else:
                module(example_input)
    finally:
        for h in handles:
            h.remove()
    return shapes


def semi_structured_refusal(device: torch.device) -> Optional[str]:
    """Why torch's 2:4 (semi-structured) kernels cannot run on ``device`` (None: they can)."""
    if device.type != "cuda":
        return (f"sparse='2:4' runs on NVIDIA GPUs of compute capability 8.0 or later (torch's "
                f"semi-structured sparse kernels); the device asked for is {device}")
    if not torch.cuda.is_available():
        return "sparse='2:4' needs a CUDA device; torch sees none on this machine"
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 0):
        return (f"sparse='2:4' needs compute capability 8.0 or later; "
                f"{torch.cuda.get_device_name(device)} has {cap[0]}.{cap[1]}")
    return None


def _is_two_four(w: torch.Tensor) -> bool:
    if w.dim() != 2 or w.shape[1] % 4:
        return False
    return bool(((w.reshape(-1, 4) != 0).sum(1) <= 2).all())


def _two_four(out: nn.Module, candidates: list[tuple[str, nn.Module, str]],
              shapes: dict[str, tuple[int, ...]], bs: list[int]) -> list[LayerChoice]:
    """The 2:4-patterned Linear layers of `out` (already on the GPU, half precision) with their
    weights in torch's semi-structured form where that converts and measures faster."""
    from torch.sparse import to_sparse_semi_structured

    made = []
    for name, m, kind in candidates:
        w = m.weight.detach()
        density = float((w != 0).float().mean()) if w.numel() else 1.0
        base = dict(name=name, kind=kind, shape=tuple(w.shape), density=density)
        why = None
        if kind != "linear":
            why = "2:4 kernels compute matrix products only (torch's semi-structured sparsity)"
        elif not _is_two_four(w):
            why = "not 2:4 (a group of 4 along a row holds more than 2 nonzeros)"
        if why is None:
            try:
                sparse_w = to_sparse_semi_structured(w)
            except (RuntimeError, ValueError) as e:  # shapes / dtypes the kernels refuse
                why = f"torch refuses it: {str(e).splitlines()[0][:160]}"
        if why is not None:
            made.append(LayerChoice(**base, sparse=False, reason=why))
            continue
        dense_w = m.weight
        speedup: dict[int, float] = {}
        if name in shapes:
            with torch.inference_mode():
                for b in bs:
                    x = torch.randn((b, *shapes[name]), dtype=w.dtype, device=w.device)
                    t_dense = _per_call_cuda(m, x)
                    m.weight = nn.Parameter(sparse_w, requires_grad=False)
                    try:
                        t_sparse = _per_call_cuda(m, x)
                    except RuntimeError as e:  # e.g. an input shape the kernel refuses
                        t_sparse = float("inf")
                        why = f"torch's kernel failed at batch {b}: {str(e)[:120]}"
                    m.weight = dense_w
                    speedup[b] = t_dense / t_sparse
        if why is None and speedup and min(speedup.values()) < 1 / AUTO_MARGIN:
            why = f"measured: 2:4 {_timings(speedup)} (dense kept)"
        if why is not None:
            made.append(LayerChoice(**base, sparse=False, reason=why, speedup=speedup))
            continue
        m.weight = nn.Parameter(sparse_w, requires_grad=False)
        reason = (f"measured: 2:4 {_timings(speedup)}" if speedup
                  else "2:4 (not timed: not reached by example_input)")
        made.append(LayerChoice(**base, sparse=True, reason=reason, speedup=speedup))
    return made


def _per_call_cuda(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> float:
    torch.cuda.synchronize()
    t = _per_call(fn, x)
    torch.cuda.synchronize()
    return t


def sparsify(module: nn.Module, *, sparse: Sparse = "auto",
             masks: Optional[dict[str, torch.Tensor]] = None, example_input: Any = None,
             batch_sizes: Sequence[int] = (1, 64), inplace: bool = False,
             device: Optional[Union[str, torch.device]] = None,
             dtype: Optional[torch.dtype] = None) -> nn.Module:
    """A copy of ``module`` (``module`` itself with ``inplace=True``) whose pruned ``nn.Linear``
    and ``nn.Conv2d`` layers hold only their nonzeros and compute with the core's sparse
    operators (CPU): ``SparseLinear`` / ``SparseConv2d``. Outputs equal the dense module's up to
    float rounding.

    ``sparse``: ``True`` every pruned layer the sparse kernels compute; ``False`` none;
    ``"auto"`` each pruned layer timed on this machine, dense against sparse, on its own input
    shape (from one forward pass of ``example_input``) at every batch size of ``batch_sizes``:
    sparse only where it was faster at all of them, so the module is not slower than the dense
    one at those sizes. A layer is pruned when its weight has zeros (``masks``, keyed
    ``"<layer>.weight"`` as a run's masks are, limits the layers considered to those named).
    The choice for each layer, with its reason and timings, is ``choices(result)``.

    ``"2:4"``: for NVIDIA GPUs (compute capability 8.0 or later; refused by name elsewhere): the
    module moves to ``device`` (default ``"cuda"``) in ``dtype`` (default bfloat16), and each
    ``nn.Linear`` whose weight holds at most 2 nonzeros in every group of 4 along its rows (a
    ``Config(pruning="2:4")`` run) gets its weight in torch's semi-structured form
    (``torch.sparse.to_sparse_semi_structured``) where torch converts it and it measured
    faster at every batch size; every other layer stays dense, its reason recorded.
    """
    if sparse not in (True, False, "auto", "2:4"):
        raise ValueError(f"sparse must be True, False, 'auto' or '2:4', got {sparse!r}")
    if sparse == "2:4":
        target = torch.device(device if device is not None else "cuda")
        why = semi_structured_refusal(target)
        if why is not None:
            raise ValueError(why)
        half = dtype if dtype is not None else torch.bfloat16
        if half not in (torch.float16, torch.bfloat16):
            raise ValueError(f"sparse='2:4' computes in float16 or bfloat16, got dtype={half}")
    elif device is not None or dtype is not None:
        raise ValueError("device and dtype are for sparse='2:4' (the CPU kernels compute the "
                         "module's own float32 / float64)")
    if not isinstance(module, nn.Module):
        raise TypeError(f"sparsify takes an nn.Module, got {type(module).__name__}")
    bs = [int(b) for b in batch_sizes]
    if not bs or any(b < 1 for b in bs):
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    out = module if inplace else copy.deepcopy(module)
    if sparse == "2:4":
        out = out.to(device=target, dtype=half)
    candidates: list[tuple[str, nn.Module, str]] = []
    for name, m in out.named_modules():
        kind = _kind(m)
        if kind is None or (masks is not None and f"{name}.weight" not in masks):
            continue
        candidates.append((name, m, kind))
    shapes: dict[str, tuple[int, ...]] = {}
    if sparse == "2:4":
        if example_input is not None and candidates:
            ex = tuple(t.to(target, half) if t.is_floating_point() else t.to(target)
                       for t in (example_input if isinstance(example_input, tuple)
                                 else (example_input,)))
            shapes = _input_shapes(out, [n for n, _, _ in candidates], ex)
        out.swamp_layers = tuple(_two_four(out, candidates, shapes, bs))  # type: ignore
        return out
    if sparse == "auto" and candidates:
        if example_input is None:
            raise ValueError("sparse='auto' times each layer on its own inputs: give "
                             "example_input (one batch the module takes, e.g. "
                             "torch.zeros(1, *input_shape)), or choose sparse=True / False")
        shapes = _input_shapes(out, [n for n, _, _ in candidates], example_input)
    made: list[LayerChoice] = []
    parents = dict(out.named_modules())
    for name, m, kind in candidates:
        w = m.weight.detach()
        density = float((w != 0).float().mean()) if w.numel() else 1.0
        base = dict(name=name, kind=kind, shape=tuple(w.shape), density=density)
        why = None
        if density >= 1.0:
            why = "not pruned"
        elif sparse is False:
            why = "sparse=False"
        elif w.device.type != "cpu" or w.dtype not in (torch.float32, torch.float64):
            why = f"the sparse kernels compute float32 / float64 on the CPU, the weight is " \
                  f"{w.dtype} on {w.device}"
        elif kind == "conv2d":
            why = conv_refusal(m)  # type: ignore[arg-type]
        if why is not None:
            made.append(LayerChoice(**base, sparse=False, reason=why))
            continue
        layer = (SparseLinear.from_dense(m) if kind == "linear"  # type: ignore[arg-type]
                 else SparseConv2d.from_dense(m))  # type: ignore[arg-type]
        speedup: dict[int, float] = {}
        if sparse == "auto":
            if name not in shapes:
                made.append(LayerChoice(**base, sparse=False,
                                        reason="not reached by example_input's forward pass"))
                continue
            with torch.inference_mode():
                for b in bs:
                    x = torch.randn((b, *shapes[name]), dtype=w.dtype)
                    speedup[b] = _per_call(m, x) / _per_call(layer, x)
            worst = min(speedup.values())
            if worst < 1 / AUTO_MARGIN:
                why = f"measured: sparse {_timings(speedup)} (dense kept)"
                made.append(LayerChoice(**base, sparse=False, speedup=speedup, reason=why))
                continue
            reason = f"measured: sparse {_timings(speedup)}"
        else:
            reason = "sparse=True"
        parent_name, _, attr = name.rpartition(".")
        parent = parents[parent_name] if parent_name else out
        setattr(parent, attr, layer)
        made.append(LayerChoice(**base, sparse=True, reason=reason, speedup=speedup))
    if sparse == "auto" and any(c.sparse for c in made):
        made = _whole_module_check(out, made, {n: m for n, m, _ in candidates}, example_input,
                                   bs)
    out.swamp_layers = tuple(made)  # type: ignore[assignment]
    return out


def _whole_module_check(out: nn.Module, made: list[LayerChoice],
                        dense_layers: dict[str, nn.Module], example_input: Any,
                        bs: list[int]) -> list[LayerChoice]:
    """Layers timed alone do not always add up (a dense layer between sparse ones reads their
    layout): the converted module against the dense one at every batch size, and while it is
    slower, the sparse layer with the smallest gain goes back to dense."""
    dense = copy.deepcopy(out)
    for name, layer in dense_layers.items():
        parent_name, _, attr = name.rpartition(".")
        setattr(dense.get_submodule(parent_name) if parent_name else dense, attr, layer)

    def batch(b: int) -> Any:
        ex = example_input if isinstance(example_input, tuple) else (example_input,)
        return tuple(t.expand(b, *t.shape[1:]).contiguous() if isinstance(t, torch.Tensor)
                     else t for t in ex)

    def slower() -> Optional[str]:
        with torch.inference_mode():
            for b in bs:
                x = batch(b)
                t_d = _per_call(lambda a: dense(*a), x)
                t_s = _per_call(lambda a: out(*a), x)
                if t_s > t_d:
                    return f"{t_d / t_s:.2f}x at batch {b}"
        return None

    while (why := slower()) is not None:
        sparse_now = [c for c in made if c.sparse]
        if not sparse_now:
            break
        worst = min(sparse_now, key=lambda c: min(c.speedup.values()))
        parent_name, _, attr = worst.name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, attr,
                dense_layers[worst.name])
        made = [dataclasses.replace(c, sparse=False, reason=c.reason + " (dense kept: the whole "
                                    f"module measured {why} with it sparse)")
                if c is worst else c for c in made]
    return made
