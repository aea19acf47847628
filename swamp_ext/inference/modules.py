"""Pruned layers that hold and compute with their nonzeros only (CSR), as plain ``nn.Module``s
calling the core's operators: ``SparseLinear`` and ``SparseConv2d``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._core import _C
from . import operators  # noqa: F401  (the fake kernels: torch.compile / torch.export)

__all__ = ["SparseConv2d", "SparseLinear", "conv_refusal", "csr_of"]

# the overloads themselves: looking them up through torch.ops on every call costs microseconds,
# which at batch 1 is as much as the product
_LINEAR = torch.ops.swamp.sparse_linear.default
_CONV2D = torch.ops.swamp.sparse_conv2d.default
# The same kernels bound directly: a plain eager call skips the dispatcher's argument parsing
# (2-3 microseconds a layer). Taken only for a plain tensor that needs no autograd, outside
# torch.compile / torch.export and tracing, where the operator must be seen.
_FAST_LINEAR = _C.inference.sparse_linear
_FAST_CONV2D = _C.inference.sparse_conv2d
_Tensor = torch.Tensor


def _plain(x: torch.Tensor) -> bool:
    return (type(x) is _Tensor and not (x.requires_grad and torch.is_grad_enabled())
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing())


def _index_dtype(n: int) -> torch.dtype:
    return torch.int32 if n < 2**31 else torch.int64


def csr_of(matrix: torch.Tensor, keep: Optional[torch.Tensor] = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(crow_indices, col_indices, values) of a 2-d tensor's entries where ``keep`` (default:
    the nonzeros), row by row; indices int32 where they fit."""
    m = matrix.detach().cpu()
    keep = (m != 0) if keep is None else keep.cpu().bool().reshape(m.shape)
    rows, cols = keep.nonzero(as_tuple=True)
    crow = torch.zeros(m.shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(rows, minlength=m.shape[0]).cumsum(0)
    dt = _index_dtype(max(m.shape[1], rows.numel()) + 1)
    return crow.to(dt), cols.to(dt).contiguous(), m[rows, cols].contiguous()


class _SparseBase(nn.Module):
    values: torch.Tensor
    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    bias: Optional[torch.Tensor]

    def _set_csr(self, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                 bias: Optional[torch.Tensor]) -> None:
        # buffers: they follow .to(dtype) (floating ones) and land in the state dict; nothing here
        # trains (the operators have no backward)
        self.register_buffer("values", values.detach().contiguous())
        self.register_buffer("crow_indices", crow.contiguous())
        self.register_buffer("col_indices", col.contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())

    @property
    def nnz(self) -> int:
        """Stored weights."""
        return int(self.values.numel())

    @property
    def density(self) -> float:
        """Stored weights / entries of the dense weight."""
        n = 1
        for d in self.weight_shape:
            n *= d
        return self.nnz / n if n else 0.0

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense tensor (zeros where pruned)."""
        rows, cols = self.weight_shape[0], 1
        for d in self.weight_shape[1:]:
            cols *= d
        crow = self.crow_indices.long()
        r = torch.repeat_interleave(torch.arange(rows, device=crow.device), crow.diff())
        dense = self.values.new_zeros(rows, cols)
        dense[r, self.col_indices.long()] = self.values
        return dense.reshape(self.weight_shape)

    def _filled(self, layer: nn.Module) -> nn.Module:
        """`layer` (a dense torch layer of this shape) carrying this layer's weight and bias."""
        with torch.no_grad():
            layer.weight.copy_(self.dense_weight())
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer


class SparseLinear(_SparseBase):
    """``nn.Linear`` computed from its nonzeros (``torch.ops.swamp.sparse_linear``, CPU):
    ``values``, ``crow_indices`` and ``col_indices`` of the ``[out_features, in_features]``
    weight, and ``bias``. ``SparseLinear.from_dense(linear)`` builds one."""

    def __init__(self, in_features: int, out_features: int, crow_indices: torch.Tensor,
                 col_indices: torch.Tensor, values: torch.Tensor,
                 bias: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if crow_indices.numel() != self.out_features + 1:
            raise ValueError(f"SparseLinear: crow_indices must have out_features + 1 = "
                             f"{self.out_features + 1} entries, got {crow_indices.numel()}")
        self._set_csr(crow_indices, col_indices, values, bias)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The dense weight's shape, ``(out_features, in_features)``."""
        return (self.out_features, self.in_features)

    @classmethod
    def from_dense(cls, linear: nn.Linear, mask: Optional[torch.Tensor] = None) -> SparseLinear:
        """The layer's weight compressed: the entries where ``mask`` (default: the nonzeros)."""
        crow, col, values = csr_of(linear.weight, mask)
        return cls(linear.in_features, linear.out_features, crow, col, values,
                   None if linear.bias is None else linear.bias.detach().cpu())

    def to_dense(self) -> nn.Linear:
        """The equivalent ``nn.Linear``."""
        return self._filled(nn.Linear(self.in_features, self.out_features,
                                      bias=self.bias is not None, dtype=self.values.dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        b = self._buffers  # one lookup instead of four through nn.Module.__getattr__
        op = _FAST_LINEAR if _plain(input) else _LINEAR
        return op(input, b["crow_indices"], b["col_indices"], b["values"], b["bias"],
                  self.in_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, density={self.density:.4f}")


def conv_refusal(conv: nn.Conv2d) -> Optional[str]:
    """Why the sparse convolution cannot compute ``conv`` (None: it can)."""
    if conv.groups != 1:
        return f"groups={conv.groups} (the sparse kernel takes groups=1)"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation={tuple(conv.dilation)} (the sparse kernel takes dilation 1)"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (the sparse kernel pads with zeros)"
    if isinstance(conv.padding, str) and conv.padding != "valid":
        k = conv.kernel_size
        if conv.padding != "same" or k[0] % 2 == 0 or k[1] % 2 == 0:
            return f"padding={conv.padding!r} with kernel {tuple(k)}"
    return None


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        return (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
    return (int(conv.padding[0]), int(conv.padding[1]))


class SparseConv2d(_SparseBase):
    """``nn.Conv2d`` (groups 1, dilation 1, zero padding) computed from its nonzeros
    (``torch.ops.swamp.sparse_conv2d``, CPU, direct sparse convolution): the weight
    ``[out, in, kh, kw]`` stored as the CSR matrix ``[out, in * kh * kw]``."""

    def __init__(self, weight_shape: tuple[int, int, int, int], crow_indices: torch.Tensor,
                 col_indices: torch.Tensor, values: torch.Tensor,
                 bias: Optional[torch.Tensor] = None, stride: tuple[int, int] = (1, 1),
                 padding: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        if len(weight_shape) != 4:
            raise ValueError(f"SparseConv2d: weight_shape must be [out, in, kh, kw], got "
                             f"{list(weight_shape)}")
        self.weight_shape = tuple(int(d) for d in weight_shape)
        self.out_channels, self.in_channels = self.weight_shape[0], self.weight_shape[1]
        self.kernel_size = self.weight_shape[2:]
        self.stride = (int(stride[0]), int(stride[1]))
        self.padding = (int(padding[0]), int(padding[1]))
        self._weight_shape = list(self.weight_shape)  # the operator's int[] arguments
        self._stride, self._padding = list(self.stride), list(self.padding)
        if crow_indices.numel() != self.out_channels + 1:
            raise ValueError(f"SparseConv2d: crow_indices must have out_channels + 1 = "
                             f"{self.out_channels + 1} entries, got {crow_indices.numel()}")
        self._set_csr(crow_indices, col_indices, values, bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, mask: Optional[torch.Tensor] = None) -> SparseConv2d:
        """The layer's weight compressed (``ValueError`` for a convolution the kernel does not
        compute: see ``conv_refusal``)."""
        why = conv_refusal(conv)
        if why is not None:
            raise ValueError(f"SparseConv2d: cannot compute this convolution: {why}")
        w = conv.weight
        crow, col, values = csr_of(w.reshape(w.shape[0], -1),
                                   None if mask is None else mask.reshape(w.shape[0], -1))
        return cls(tuple(w.shape), crow, col, values,
                   None if conv.bias is None else conv.bias.detach().cpu(),
                   tuple(conv.stride), _conv_padding(conv))

    def to_dense(self) -> nn.Conv2d:
        """The equivalent ``nn.Conv2d``."""
        return self._filled(nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                                      self.stride, self.padding, bias=self.bias is not None,
                                      dtype=self.values.dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        b = self._buffers
        op = _FAST_CONV2D if _plain(input) else _CONV2D
        return op(input, b["crow_indices"], b["col_indices"], b["values"], b["bias"],
                  self._weight_shape, self._stride, self._padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
                f"density={self.density:.4f}")
