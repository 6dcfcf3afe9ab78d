"""float32 linears by hvd's own kernel (kernels_f32.c `hvd_linear_f32`), for `HFTarget`.

A vendor float32 GEMM takes other kernels for other row counts: a linear over a few rows costs
well over its one-row time, so a verify of a few draft tokens costs far more than a plain step,
and which rows share a call can change a result's bits. Ours computes every output by one
fixed sequence of fmas, whatever rows share the call, and reads the weights once per call, so
a few rows cost about what one does. So the model's linears are batch-invariant by
construction, as the exact target's are; attention is f32_attention.py's where that kernel
applies, and elsewhere torch's, whose kernel for one query row differs from that for several
in the last bits (there the float32 target is exact where those bits do not change an argmax).

`use_native_linears` swaps the class of a float32 CPU model's `nn.Linear` modules (weights
untouched) where the kernel applies; elsewhere, and whenever autograd needs a graph, torch's
linear runs.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

from hvd.targets.native import NativeUnavailable, library, ptr


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (..., K) @ weight (N, K)^T (+ bias): (..., N), by the kernel (x float32 on the CPU, K a
    multiple of 8, weight contiguous: see `applies`)."""
    k, n = weight.shape[1], weight.shape[0]
    rows = x.reshape(-1, k).contiguous()  # (T, K)
    y = torch.empty(rows.shape[0], n, dtype=torch.float32)  # (T, N)
    library().hvd_linear_f32(ptr(rows), rows.shape[0], k, ptr(weight), n, ptr(y))
    if bias is not None:
        y += bias
    return y.view(*x.shape[:-1], n)


def applies(weight: torch.Tensor) -> bool:
    """Whether the kernel can compute a linear of this weight (N, K)."""
    return (weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.dim() == 2
            and weight.shape[1] % 8 == 0 and weight.is_contiguous())


class NativeLinear(torch.nn.Linear):
    """`nn.Linear` whose forward is the kernel's (set as the class of a loaded module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        return linear(x, self.weight, self.bias)


def available(threads: int) -> bool:
    """Whether the kernels run here (built for this machine; AVX2 + FMA), set to `threads`."""
    try:
        library().hvd_set_threads(int(threads))
    except NativeUnavailable:
        return False
    return True


def use_native_linears(model: torch.nn.Module) -> int:
    """Swap every plain `nn.Linear` of `model` whose weight the kernel applies to; the count."""
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and applies(module.weight):
            module.__class__ = NativeLinear
            swapped += 1
    return swapped
