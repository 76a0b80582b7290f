"""Quantized drop-in modules. Every one stores plain tensors (int8/uint8 + float scales) as
buffers, so a quantized model saves to safetensors and reloads without pickles, and every one
has ``from_float`` (quantize a float module) and ``empty`` (the skeleton a saved state loads into).

- ``DynamicInt8Linear``: int8 per-channel weights, activations quantized per batch at run time
  (fbgemm/oneDNN int8 GEMM on CPU; dequantized matmul elsewhere).
- ``StaticInt8Linear``: int8 weights and activation ranges fixed by calibration.
- ``WeightOnlyLinear``: int8 or int4 group-wise weights, dequantized on the fly; float matmul.
- ``CastLinear``: fp16/bf16 weights and matmul.
- ``QuantizedEmbedding``: row-wise int8/int4 (per-row scale and zero point), rows dequantized
  at lookup.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def quantize_symmetric(w: torch.Tensor, bits: int, group_size: int | None = None):
    """Symmetric per-row (or per-group) quantization: returns (int8 codes, float32 scales)."""
    qmax = 2 ** (bits - 1) - 1
    rows = w.detach().float()
    if group_size:
        rows = rows.reshape(w.shape[0], -1, group_size)
    scale = rows.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / qmax
    q = torch.round(rows / scale).clamp(-qmax, qmax).to(torch.int8)
    return q.reshape(w.shape), scale.squeeze(-1)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Two signed 4-bit codes per byte (last dim must be even)."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    lo = (packed & 0x0F).to(torch.int16) - 8
    hi = (packed >> 4).to(torch.int16) - 8
    return torch.stack([lo, hi], dim=-1).reshape(*packed.shape[:-1], -1).to(torch.int8)


@contextlib.contextmanager
def _quiet():
    """torch's quantized-tensor API warns it is deprecated; it is still the int8 GEMM on CPU."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        yield


class _Int8WeightLinear(nn.Module):
    """Shared storage for int8 per-channel weights + fbgemm prepacking."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed = None

    @classmethod
    def empty(cls, linear: nn.Linear, **kwargs):
        return cls(linear.in_features, linear.out_features, linear.bias is not None, **kwargs)

    def _set_weight(self, linear: nn.Linear) -> None:
        self.qweight, self.scale = quantize_symmetric(linear.weight, 8)
        if linear.bias is not None:
            self.bias = linear.bias.detach().float().clone()
        self._packed = None

    def dequantized_weight(self) -> torch.Tensor:
        return self.qweight.float() * self.scale[:, None]

    def packed(self):
        if self._packed is None:
            with _quiet():
                zeros = torch.zeros(self.out_features, dtype=torch.long)
                w = torch._make_per_channel_quantized_tensor(self.qweight, self.scale.double(), zeros, 0)
                self._packed = torch.ops.quantized.linear_prepack(w, self.bias)
        return self._packed

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._packed = None

    def _apply(self, fn, recurse=True):
        self._packed = None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class DynamicInt8Linear(_Int8WeightLinear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, reduce_range: bool = True):
        super().__init__(in_features, out_features, bias)
        self.reduce_range = reduce_range

    @classmethod
    def from_float(cls, linear: nn.Linear, reduce_range: bool = True) -> DynamicInt8Linear:
        new = cls.empty(linear, reduce_range=reduce_range)
        new._set_weight(linear)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return F.linear(x, self.dequantized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        return torch.ops.quantized.linear_dynamic(x.float().contiguous(), self.packed(), self.reduce_range)


def activation_qparams(lo: float, hi: float, reduce_range: bool = True) -> tuple[float, int]:
    """Affine uint8 (0..127 with reduce_range, which avoids int16 overflow on AVX2) scale/zero."""
    qmax = 127 if reduce_range else 255
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / qmax, 1e-8)
    zero = int(min(max(round(-lo / scale), 0), qmax))
    return float(scale), zero


class StaticInt8Linear(_Int8WeightLinear):
    """Input and output ranges fixed by calibration: quantize → int8 GEMM → dequantize."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, reduce_range: bool = True):
        super().__init__(in_features, out_features, bias)
        self.reduce_range = reduce_range
        self.register_buffer("act_range", torch.zeros(2, 2))   # [[in_lo, in_hi], [out_lo, out_hi]]

    @classmethod
    def from_float(cls, linear: nn.Linear, in_range, out_range, reduce_range: bool = True) -> StaticInt8Linear:
        new = cls.empty(linear, reduce_range=reduce_range)
        new._set_weight(linear)
        new.act_range = torch.tensor([list(in_range), list(out_range)], dtype=torch.float32)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (ilo, ihi), (olo, ohi) = self.act_range.tolist()
        if x.device.type != "cpu":
            return _fake_quant(F.linear(_fake_quant(x, ilo, ihi, self.reduce_range), self.dequantized_weight(),
                                        self.bias), olo, ohi, False)
        in_scale, in_zero = activation_qparams(ilo, ihi, self.reduce_range)
        out_scale, out_zero = activation_qparams(olo, ohi, False)
        with _quiet():
            xq = torch.quantize_per_tensor(x.float().contiguous(), in_scale, in_zero, torch.quint8)
            return torch.ops.quantized.linear(xq, self.packed(), out_scale, out_zero).dequantize()


def _fake_quant(x: torch.Tensor, lo: float, hi: float, reduce_range: bool) -> torch.Tensor:
    scale, zero = activation_qparams(lo, hi, reduce_range)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 127 if reduce_range else 255)


class WeightOnlyLinear(nn.Module):
    """int8/int4 weights with one scale per ``group_size`` inputs; float activations."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 8, group_size: int = 64):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        cols = in_features // 2 if bits == 4 else in_features
        self.register_buffer("qweight", torch.zeros(out_features, cols, dtype=torch.uint8 if bits == 4 else torch.int8))
        self.register_buffer("scale", torch.ones(out_features, in_features // group_size))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def empty(cls, linear: nn.Linear, bits: int = 8, group_size: int = 64) -> WeightOnlyLinear:
        return cls(linear.in_features, linear.out_features, linear.bias is not None, bits, group_size)

    @classmethod
    def from_float(cls, linear: nn.Linear, bits: int = 8, group_size: int = 64) -> WeightOnlyLinear:
        new = cls.empty(linear, bits, group_size)
        q, new.scale = quantize_symmetric(linear.weight, bits, group_size)
        new.qweight = pack_int4(q) if bits == 4 else q
        if linear.bias is not None:
            new.bias = linear.bias.detach().float().clone()
        return new

    def dequantized_weight(self) -> torch.Tensor:
        q = unpack_int4(self.qweight) if self.bits == 4 else self.qweight
        w = q.float().reshape(self.out_features, -1, self.group_size) * self.scale[..., None]
        return w.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, group_size={self.group_size}"


class CastLinear(nn.Module):
    """fp16/bf16 weights; the matmul runs in that dtype and returns the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: str = "bf16"):
        super().__init__()
        self.dtype_name = dtype
        torch_dtype = _DTYPES[dtype]
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch_dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=torch_dtype), requires_grad=False) if bias else None

    @classmethod
    def empty(cls, linear: nn.Linear, dtype: str = "bf16") -> CastLinear:
        return cls(linear.in_features, linear.out_features, linear.bias is not None, dtype)

    @classmethod
    def from_float(cls, linear: nn.Linear, dtype: str = "bf16") -> CastLinear:
        new = cls.empty(linear, dtype)
        new.weight.data = linear.weight.detach().to(_DTYPES[dtype])
        if linear.bias is not None:
            new.bias.data = linear.bias.detach().to(_DTYPES[dtype])
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


class QuantizedEmbedding(nn.Module):
    """Row-wise affine int8/int4 embedding table; looked-up rows are dequantized on the fly."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int = 8, padding_idx: int | None = None):
        super().__init__()
        if bits not in (4, 8) or (bits == 4 and embedding_dim % 2):
            raise ValueError(f"bits must be 8, or 4 with an even dim; got bits={bits}, dim={embedding_dim}")
        self.num_embeddings, self.embedding_dim, self.bits, self.padding_idx = num_embeddings, embedding_dim, bits, padding_idx
        cols = embedding_dim // 2 if bits == 4 else embedding_dim
        self.register_buffer("codes", torch.zeros(num_embeddings, cols, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(num_embeddings))
        self.register_buffer("zero", torch.zeros(num_embeddings))

    @classmethod
    def empty(cls, emb: nn.Embedding, bits: int = 8) -> QuantizedEmbedding:
        return cls(emb.num_embeddings, emb.embedding_dim, bits, emb.padding_idx)

    @classmethod
    def from_float(cls, emb: nn.Embedding, bits: int = 8) -> QuantizedEmbedding:
        new = cls.empty(emb, bits)
        w = emb.weight.detach().float()
        qmax = 2 ** bits - 1
        lo, hi = w.amin(dim=1), w.amax(dim=1)
        new.scale = ((hi - lo) / qmax).clamp(min=1e-8)
        new.zero = lo
        codes = torch.round((w - lo[:, None]) / new.scale[:, None]).clamp(0, qmax).to(torch.uint8)
        new.codes = (codes[:, 0::2] | (codes[:, 1::2] << 4)) if bits == 4 else codes
        return new

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        codes = self.codes[ids]
        if self.bits == 4:
            codes = torch.stack([codes & 0x0F, codes >> 4], dim=-1).reshape(*codes.shape[:-1], -1)
        return codes.float() * self.scale[ids].unsqueeze(-1) + self.zero[ids].unsqueeze(-1)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (for code that reads ``.weight``; costs a full float copy)."""
        return self.rows(torch.arange(self.num_embeddings, device=self.codes.device))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows(ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}"


MODULE_TYPES: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (DynamicInt8Linear, StaticInt8Linear, WeightOnlyLinear, CastLinear, QuantizedEmbedding)
}
