"""Any ``torch.nn.Module`` as the model of a run (``run_imp(config, data, model=module)``).

The C++ core keeps owning the method: it holds the particles' parameter and buffer tensors (the
very tensors of the copies made here: shared storage, nothing copied per step), draws the batch
orders, steps masked SGD, takes SWA snapshots, averages, recomputes batch norm, prunes, saves
checkpoints and evaluates. This module only makes the copies and runs their ``forward`` as
written, when the core asks for it.

Particles of a round train one after the other ("sequential") or, where ``torch.func`` can run
the module, stacked: N particles as one ``vmap(functional_call)`` over particle-major parameters
(the layout of the built-in models: ``flat.view(N, *shape)[n]`` is particle n's tensor).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._core import _C

__all__ = ["Prunable", "default_prunable"]

Prunable = Union[None, Sequence[str], Callable[[str, torch.Tensor], bool]]

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d, nn.Linear)
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def default_prunable(module: nn.Module) -> list[str]:
    """The parameters pruned by default: the weights of Conv1d/2d/3d, ConvTranspose and Linear
    layers (attention's output projection included) and the input projections of
    ``nn.MultiheadAttention``; norms, biases and embeddings stay dense. Frozen parameters
    (requires_grad=False) are left out. Names as ``module.named_parameters()`` gives them."""
    chosen: set[int] = set()
    for m in module.modules():
        names = ("weight",) if isinstance(m, _LAYER_TYPES) else (
            _ATTENTION_WEIGHTS if isinstance(m, nn.MultiheadAttention) else ())
        for n in names:
            p = m._parameters.get(n)
            if p is not None and p.requires_grad:
                chosen.add(id(p))
    return [n for n, p in module.named_parameters() if id(p) in chosen]


def _fail_type(msg: str) -> TypeError:
    return TypeError(f"model: {msg}")


def _fail_value(msg: str) -> ValueError:
    return ValueError(f"model: {msg}")


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    if isinstance(logits, torch.Tensor):
        return logits
    raise _fail_type(f"forward returned {type(out).__name__}; expected a tensor of logits or an "
                     "object with a .logits tensor")


def _scalar_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        what = (f"a {tuple(loss.shape)} {loss.dtype} tensor" if isinstance(loss, torch.Tensor)
                else type(loss).__name__)
        raise TypeError(f"loss_fn returned {what}; expected a floating-point scalar tensor (the "
                        "mean loss of the batch)")
    return loss.reshape(())


def _batchnorms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def _sync_bn_forward(m: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not m.training:
        return type(m).forward(m, x)
    m._check_input_dim(x)
    return _C.ops.sync_batch_norm(x, m.weight, m.bias, m.running_mean, m.running_var,
                                  m.num_batches_tracked, m.momentum, m.eps)


@contextlib.contextmanager
def _synchronised_batchnorm(module: nn.Module) -> Iterator[None]:
    """Inside the core's data-parallel training step with Config.sync_batchnorm: the module's
    nn.BatchNorm layers compute the statistics of the group's whole batch (the core's
    sync_batch_norm, as the zoo's layers do); the module itself is not changed."""
    if not _C.ops.sync_batchnorm_active():
        yield
        return
    bns = _batchnorms(module)
    for m in bns:
        m.forward = functools.partial(_sync_bn_forward, m)
    try:
        yield
    finally:
        for m in bns:
            del m.forward


class _Single:
    """One copy of the module: one particle (or the ticket, or the average)."""

    def __init__(self, adapter: _ModuleAdapter, module: nn.Module) -> None:
        self.module = module
        self.params = list(module.named_parameters())
        self.buffers = list(module.named_buffers())
        self.loss = self._loss if adapter.loss_fn is not None else None
        self._loss_fn = adapter.loss_fn

    def _call(self, x: Any) -> Any:
        with _synchronised_batchnorm(self.module):
            if _C.ops.channels_last_enabled():  # the core's Config.channels_last, this thread
                return call_channels_last(self.module, x)
            return call_module(self.module, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits(self._call(x))

    def _loss(self, x: Any, y: torch.Tensor, particles: int) -> torch.Tensor:
        return _scalar_loss(self._loss_fn(self._call(x), y)).reshape(1)

    def train(self, on: bool) -> None:
        self.module.train(on)

    def batchnorm_statistics(self) -> list[torch.Tensor]:
        """The running means, variances and batch counts recompute_bn recomputes."""
        return [t for m in _batchnorms(self.module)
                for t in (m.running_mean, m.running_var, m.num_batches_tracked) if t is not None]

    def recompute_bn(self, feed: Callable[[], None]) -> bool:
        bns = _batchnorms(self.module)
        if not bns:
            return False
        saved = [m.momentum for m in bns]
        was_training = self.module.training
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average, not an EMA
        self.module.train(True)
        try:
            with torch.no_grad():
                feed()
        finally:
            for m, momentum in zip(bns, saved):
                m.momentum = momentum
            self.module.train(was_training)
        return True


def _call_args(x: Any) -> tuple[tuple, dict]:
    """A batch of inputs as call arguments: a dict is keyword arguments, a tuple / list
    positional ones, anything else the one argument."""
    if isinstance(x, dict):
        return (), dict(x)
    if isinstance(x, (tuple, list)):
        return tuple(x), {}
    return (x,), {}


def call_module(module: nn.Module, x: Any) -> Any:
    """The module on a batch of inputs: a tensor, a tuple / list (positional arguments) or a dict
    (keyword arguments)."""
    args, kwargs = _call_args(x)
    return module(*args, **kwargs)


def _nhwc(t: Any) -> Any:
    if isinstance(t, torch.Tensor) and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def call_channels_last(module: nn.Module, x: Any) -> Any:
    """The module on a batch in the channels-last memory order: its 4-D inputs and 4-D
    parameters (convolution weights) as NHWC copies, through ``functional_call``, so that the
    parameters themselves keep their layout (the gradients reach them through the copies)."""
    from torch.func import functional_call

    params = {n: _nhwc(p) for n, p in module.named_parameters() if p.dim() == 4}
    args, kwargs = _call_args(x)
    return functional_call(module, params, tuple(_nhwc(a) for a in args),
                           {k: _nhwc(v) for k, v in kwargs.items()})


def _flat(t: torch.Tensor, n: int) -> torch.Tensor:
    """n copies of t, particle-major: [n * d0, d1, ...]."""
    return t.detach().unsqueeze(0).expand(n, *t.shape).reshape(n * t.shape[0], *t.shape[1:]) \
        .clone()


class _Stacked:
    """N particles in one computation: particle-major tensors held by the core, viewed as
    [N, *shape] and run with ``vmap(functional_call)`` over the module."""

    def __init__(self, adapter: _ModuleAdapter, n: int) -> None:
        from torch.func import functional_call, vmap

        self.n = n
        self.template = adapter.copy()
        self.params: list[tuple[str, torch.Tensor]] = []
        self.buffers: list[tuple[str, torch.Tensor]] = []
        self._shapes: dict[str, torch.Size] = {}
        self._shared: dict[str, torch.Tensor] = {}  # 0-d buffers (batch counts): one for all
        for name, p in self.template.named_parameters():
            f = _flat(p, n).requires_grad_(p.requires_grad)
            self.params.append((name, f))
            self._shapes[name] = p.shape
        for name, b in self.template.named_buffers():
            if b.dim() == 0:
                self._shared[name] = b
                self.buffers.append((name, b))
            else:
                self.buffers.append((name, _flat(b, n)))
                self._shapes[name] = b.shape
        loss_fn = adapter.loss_fn
        template, shared = self.template, self._shared

        def call(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return _logits(functional_call(template, (p, b, shared), (x,)))

        def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return _scalar_loss(loss_fn(functional_call(template, (p, b, shared), (x,)), y))

        self._call = vmap(call, randomness="different")
        self._vloss = vmap(loss, randomness="different")
        self.loss = self._loss if loss_fn is not None else None

    def _views(self) -> tuple[dict, dict]:
        n = self.n
        p = {k: t.view(n, *self._shapes[k]) for k, t in self.params}
        b = {k: t.view(n, *self._shapes[k]) for k, t in self.buffers if k not in self._shared}
        return p, b

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # stacked [B, N*C, ...] -> [N, B, C, ...]
        return x.reshape(x.shape[0], self.n, x.shape[1] // self.n, *x.shape[2:]).transpose(0, 1)

    def _refuse_channels_last(self) -> None:
        if _C.ops.channels_last_enabled():  # refused before the run (check_stacking)
            raise RuntimeError("channels_last: stacked (vmap) particles of a Python module run "
                               "in the contiguous layout")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._refuse_channels_last()
        p, b = self._views()
        out = self._call(p, b, self._split(x))  # [N, B, K]
        return out.transpose(0, 1).reshape(out.shape[1], -1)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, particles: int) -> torch.Tensor:
        self._refuse_channels_last()
        p, b = self._views()
        return self._vloss(p, b, self._split(x), y.view(self.n, -1))

    def train(self, on: bool) -> None:
        self.template.train(on)

    def recompute_bn(self, feed: Callable[[], None]) -> bool:
        raise RuntimeError("batch-norm statistics are recomputed on single particles only")


class _ModuleAdapter:
    """What the C++ core asks of a Python module (see csrc/python/py_model_source.cpp)."""

    def __init__(self, module: nn.Module, *, device: str, prunable: Prunable = None,
                 loss_fn: Optional[Callable[[Any, torch.Tensor], torch.Tensor]] = None) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(module).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (output, target) -> loss, got "
                            f"{type(loss_fn).__name__}")
        self.loss_fn = loss_fn
        self.device = torch.device(device)
        _check_module(module)
        try:
            self._original = copy.deepcopy(module)
        except Exception as e:  # noqa: BLE001 - any failure to copy is the user's module's
            raise _fail_type(f"cannot copy the module ({type(e).__name__}: {e}); swamp_ext trains "
                             "copies and leaves yours untouched") from e
        for p in self._original.parameters():
            p.grad = None
        self.prunable_names = _select_prunable(self._original, prunable)
        cls = type(module)
        self.class_name = f"{cls.__module__}.{cls.__qualname__}"
        self.identity = f"python:{self.class_name}"
        self.fingerprint = _fingerprint(self._original)
        self._stack_reason: Optional[str] = None
        self._stack_checked = False
        self.stackable = False
        self._warned = False

    # ---- asked by the core ----------------------------------------------------------------
    def copy(self) -> nn.Module:
        m = copy.deepcopy(self._original).to(self.device)
        for p in m.parameters():
            p.grad = None
        return m

    def create(self, particles: int) -> Union[_Single, _Stacked]:
        return _Single(self, self.copy()) if particles == 1 else _Stacked(self, particles)

    def auto_path(self, device: str, particles: int) -> Optional[str]:
        """particle_mode 'auto' for a Python module, measured with benchmarks/custom_model.py
        (README): on the CPU side by side on threads, one particle a thread, when they spread
        evenly over the intra-op threads (torch releases the GIL inside its kernels: 1.0-1.3x
        the zoo's time, where stacked vmap is 1.4-1.6x), else one after the other; on a GPU
        stacked (one vmap for all particles) where vmap gives the module's own outputs."""
        if particles <= 1:
            return "sequential"
        if torch.device(device).type == "cpu":
            threads = torch.get_num_threads()
            return "threads" if threads > 1 and particles % threads == 0 else "sequential"
        if not self.stackable:
            if not self._warned and self._stack_reason:
                warnings.warn(f"the particles of {self.class_name} train one after the other: "
                              f"{self._stack_reason}", stacklevel=2)
                self._warned = True
            return "sequential"
        return "stacked"

    # ---- checked before the run -----------------------------------------------------------
    def check_stacking(self, x: torch.Tensor, precision: str = "fp32",
                       channels_last: Any = "auto") -> Optional[str]:
        """Whether vmap runs this module exactly as the module itself: two particles with
        different weights, stacked, against each alone, in eval and (when deterministic) in train
        mode, forward and backward. Returns the reason it cannot, None when it can."""
        if self._stack_checked:
            return self._stack_reason
        self._stack_checked = True
        if channels_last is True:
            self._stack_reason = ("channels_last=True: torch.func.vmap runs the particles in the "
                                  "contiguous layout")
            self.stackable = False
            return self._stack_reason
        if precision != "fp32":
            # torch's vmap batching rules for linear layers with a bias and for convolutions run
            # before autocast: stacked particles would silently train in float32
            self._stack_reason = (f"precision {precision!r}: torch.func.vmap runs linear layers "
                                  "with a bias and convolutions outside autocast, so stacked "
                                  "particles would train in float32")
            self.stackable = False
            return self._stack_reason
        self._stack_reason = _stack_problem(self, x)
        self.stackable = self._stack_reason is None
        return self._stack_reason

    def state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.to_module(state).state_dict()

    def to_module(self, state: dict[str, torch.Tensor]) -> nn.Module:
        m = copy.deepcopy(self._original)
        with torch.no_grad():
            for name, t in list(m.named_parameters()) + list(m.named_buffers()):
                t.copy_(state[name])
        return m

    def describe(self) -> dict[str, Any]:
        return {"class": self.class_name, "fingerprint": self.fingerprint,
                "prunable": list(self.prunable_names)}


def _check_module(module: nn.Module) -> None:
    from torch.nn.utils import prune

    for name, m in module.named_modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                raise _fail_value(
                    f"'{name or type(module).__name__}' is reparametrised by torch.nn.utils.prune "
                    f"(weight_orig / weight_mask); call torch.nn.utils.prune.remove on it first: "
                    f"swamp_ext keeps its own masks")
    params = list(module.named_parameters())
    if not params:
        raise _fail_value(f"{type(module).__name__} has no parameters")
    devices: dict[torch.device, str] = {}
    for name, t in params + list(module.named_buffers()):
        if isinstance(t, (nn.parameter.UninitializedParameter, nn.parameter.UninitializedBuffer)):
            raise _fail_value(f"'{name}' is not initialised yet (a lazy module): run one forward "
                              f"pass before handing it over")
        devices.setdefault(t.device, name)
    for name, p in params:
        if not p.is_floating_point():
            raise _fail_type(f"parameter '{name}' is {p.dtype}; parameters must be floating point")
    if len(devices) > 1:
        where = ", ".join(f"'{n}' on {d}" for d, n in devices.items())
        raise _fail_value(f"parameters and buffers on several devices ({where}); put the module "
                          f"on one device")
    if torch.device("meta") in devices:
        raise _fail_value("the module is on the meta device (no weights to start from)")


def _select_prunable(module: nn.Module, prunable: Prunable) -> list[str]:
    params = dict(module.named_parameters())
    if prunable is None:
        names = default_prunable(module)
        if not names:
            raise _fail_value(
                f"{type(module).__name__} has no Conv or Linear weight to prune; name the "
                f"parameters to prune with prunable=[...] or prunable=lambda name, p: ...")
        return names
    if callable(prunable):
        names = [n for n, p in params.items() if prunable(n, p)]
        if not names:
            raise _fail_value("prunable selected no parameter")
        return names
    if isinstance(prunable, str) or not isinstance(prunable, Sequence):
        raise TypeError(f"prunable must be a list of parameter names or a callable "
                        f"(name, param) -> bool, got {type(prunable).__name__}")
    names = list(prunable)
    if not names:
        raise _fail_value("prunable is empty: name at least one parameter")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"prunable must hold parameter names, got {n!r}")
        if n not in params:
            known = ", ".join(list(params)[:12]) + (", ..." if len(params) > 12 else "")
            raise _fail_value(f"prunable names '{n}', which is not a parameter of "
                              f"{type(module).__name__} (parameters: {known})")
        if params[n].dim() == 0:
            raise _fail_value(f"prunable parameter '{n}' is a scalar")
    if len(set(names)) != len(names):
        raise _fail_value("prunable names a parameter twice")
    order = list(params)
    return sorted(names, key=order.index)


def _fingerprint(module: nn.Module) -> str:
    h = hashlib.sha256()
    for kind, items in (("p", module.named_parameters()), ("b", module.named_buffers())):
        for name, t in items:
            h.update(f"{kind} {name} {tuple(t.shape)} {t.dtype}\n".encode())
    return h.hexdigest()[:16]


def _stack_problem(adapter: _ModuleAdapter, x: Any) -> Optional[str]:
    if not isinstance(x, torch.Tensor):
        return "its inputs are a tuple / dict (stacked particles take one input tensor)"
    for name, p in adapter._original.named_parameters():
        if p.dim() == 0:
            return f"parameter '{name}' is a scalar (stacked particles need a leading dimension)"
    try:
        a, b = adapter.copy(), adapter.copy()
        with torch.no_grad():
            for p in b.parameters():
                p.add_(torch.randn_like(p) * 0.01 * (p.abs().mean() + 1e-3))
        stacked = _Stacked(adapter, 2)
        with torch.no_grad():
            for (_, flat), pa, pb in zip(stacked.params, a.parameters(), b.parameters()):
                flat.view(2, *pa.shape).copy_(torch.stack([pa, pb]))
        xs = torch.stack([x, x]).transpose(0, 1).reshape(x.shape[0], 2 * x.shape[1],
                                                         *x.shape[2:])
        for train in (False, True):
            if train and not _deterministic(adapter, x):
                continue
            a.train(train)
            b.train(train)
            stacked.train(train)
            want = torch.stack([_logits(a(x)), _logits(b(x))])
            got = stacked.forward(xs).view(x.shape[0], 2, -1).transpose(0, 1)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                return (f"torch.func.vmap gives other outputs than the module itself in "
                        f"{'train' if train else 'eval'} mode")
        stacked.train(True)
        stacked.forward(xs).sum().backward()
        if any(f.requires_grad and f.grad is None for _, f in stacked.params):
            return "under torch.func.vmap some parameters get no gradient"
    except Exception as e:  # noqa: BLE001 - any failure means: cannot be stacked
        return f"torch.func.vmap cannot run it ({type(e).__name__}: {str(e).splitlines()[0]})"
    return None


def _deterministic(adapter: _ModuleAdapter, x: torch.Tensor) -> bool:
    m = adapter.copy().train(True)
    with torch.no_grad():
        return bool(torch.equal(_logits(m(x)), _logits(m(x))))
