"""Quantization-aware training: fake-quant Linears fine-tuned with the foundation's ``fit``,
then converted to real static int8 (``StaticInt8Linear``) with the ranges learned in training.

>>> names = prepare_qat_(teacher)                  # Linear → FakeQuantLinear (still float)
>>> fit(teacher, examples, TrainConfig(max_steps=300, lr=1e-5), "runs/qat", validate=...)
>>> report = convert_qat_(teacher)                 # FakeQuantLinear → StaticInt8Linear
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanrank.compress.qmodules import StaticInt8Linear, _fake_quant
from leanrank.compress.quantize import QuantizeReport, default_filter, module_nbytes, record_quantize_step
from leanrank.core.errors import LeanrankError
from leanrank.core.modules import FilterFn, named_modules_of, set_module


class FakeQuantLinear(nn.Module):
    """A float Linear that sees int8 rounding in training: per-channel symmetric weights and
    per-tensor activations whose ranges follow an exponential moving average (frozen in eval)."""

    def __init__(self, linear: nn.Linear, momentum: float = 0.01, reduce_range: bool = True):
        super().__init__()
        self.linear, self.momentum, self.reduce_range = linear, momentum, reduce_range
        self.register_buffer("act_range", torch.zeros(2, 2))   # [[in_lo, in_hi], [out_lo, out_hi]]
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def _track(self, row: int, x: torch.Tensor) -> None:
        lo, hi = x.detach().min(), x.detach().max()
        if self.seen == 0:
            self.act_range[row] = torch.stack([lo, hi])
        else:
            self.act_range[row] += self.momentum * (torch.stack([lo, hi]) - self.act_range[row])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.training:
            self._track(0, x)
        xq = _fake_quant(x, *self.act_range[0].tolist(), self.reduce_range)
        w = self.linear.weight
        scale = (w.detach().abs().amax(dim=1) / 127).clamp(min=1e-8)
        wq = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -127, 127)
        y = F.linear(xq, wq, self.linear.bias)
        if self.training:
            self._track(1, y)
            self.seen += 1
        return _fake_quant(y, *self.act_range[1].tolist(), False)


def prepare_qat_(model: nn.Module, filter_fn: FilterFn | None = None, momentum: float = 0.01) -> list[str]:
    """Swap the chosen Linears (default: all but the score head) for FakeQuantLinear."""
    filter_fn = filter_fn or default_filter
    names = []
    for fqn, module in named_modules_of(model, nn.Linear, filter_fn):
        set_module(model, fqn, FakeQuantLinear(module, momentum))
        names.append(fqn)
    if not names:
        raise LeanrankError("QAT found no Linear layer to prepare")
    return names


def convert_qat_(model: nn.Module) -> QuantizeReport:
    """Replace every FakeQuantLinear by a real StaticInt8Linear with its learned ranges."""
    found = list(named_modules_of(model, FakeQuantLinear))
    if not found:
        raise LeanrankError("no FakeQuantLinear in the model: run prepare_qat_ and fine-tune first")
    before = after = 0
    for fqn, fq in found:
        if int(fq.seen) == 0:
            raise LeanrankError(f"{fqn} never saw training data; its activation ranges are unset")
        (ilo, ihi), (olo, ohi) = fq.act_range.tolist()
        new = StaticInt8Linear.from_float(fq.linear, (ilo, ihi), (olo, ohi), fq.reduce_range)
        before += module_nbytes(fq.linear)
        after += module_nbytes(new)
        set_module(model, fqn, new)
    report = QuantizeReport("int8-qat", [f for f, _ in found], {}, before, after)
    record_quantize_step(model, report, {"momentum": found[0][1].momentum},
                         {"reduce_range": found[0][1].reduce_range}, StaticInt8Linear.__name__)
    return report
