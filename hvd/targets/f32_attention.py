"""float32 attention by hvd's own kernel (kernels_f32.c `hvd_attention_f32`), for `HFTarget`'s verifies.

torch's CPU attention takes another kernel for one query row than for several, and the two differ
in the last bits: verifying draft tokens could give other logits than plain decoding at
the same position. Ours computes each query row by one fixed sequence of operations over the
keys plain decoding has there, in the same order, whatever other rows share the call: with
f32_linear.py's linears, every row of a float32 verify is the row a plain step computes, bit for
bit. It also reads the cache once for all the rows of a call, where torch's cost grows with
them (measured: docs/BENCHMARKS.md, "The float32 target").

A verify says which keys each of its query rows sees (`Rows`); layers the kernel does not cover
(a sliding window, soft-capping) keep torch's attention.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from hvd.targets.native import library, ptr


@dataclass(frozen=True)
class Rows:
    """The keys (cache positions) each query row t of a verify sees, in order: 0 .. base[t]-1,
    then path[off[t]] .. path[off[t+1]-1] (its ancestors in a draft tree, itself last)."""

    base: torch.Tensor  # (T,) int32
    path: torch.Tensor  # (P,) int32
    off: torch.Tensor  # (T + 1,) int32

    @staticmethod
    def chain(past: int, n: int) -> "Rows":
        """The root at position `past` and `n` draft tokens after it, each seeing all before it."""
        base = torch.arange(past + 1, past + n + 2, dtype=torch.int32)  # (1 + n,)
        return Rows(base, torch.zeros(0, dtype=torch.int32), torch.zeros(n + 2, dtype=torch.int32))

    @staticmethod
    def tree(past: int, parents: Sequence[int]) -> "Rows":
        """The root at position `past`, draft node j at `past + 1 + j` under node `parents[j]`
        (-1: the root): every row sees the past, then the root and its ancestors down to itself."""
        paths = [[past]]
        for j, p in enumerate(parents):
            paths.append(paths[p + 1] + [past + 1 + j])
        off = [0]
        for p in paths:
            off.append(off[-1] + len(p))
        return Rows(torch.full((len(paths),), past, dtype=torch.int32),
                    torch.tensor([k for p in paths for k in p], dtype=torch.int32), torch.tensor(off, dtype=torch.int32))


def applies(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs) -> bool:
    """Whether the kernel computes this layer's attention: float32 on the CPU, batch 1, head
    size a multiple of 8 up to 256, grouped heads, no sliding window or soft-capping, and the
    cache laid out as transformers keeps it (each head's keys rows of D floats, the values alike)."""
    b, h, _, d = query.shape
    kvh = key.shape[1]
    return (query.dtype == key.dtype == value.dtype == torch.float32 and query.device.type == "cpu" and b == 1
            and d % 8 == 0 and d <= 256 and h % kvh == 0 and getattr(module, "sliding_window", None) is None
            and kwargs.get("softcap") is None and kwargs.get("position_bias") is None
            and key.stride(-1) == value.stride(-1) == 1 and key.stride(2) == value.stride(2) == d
            and key.stride(1) == value.stride(1))


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rows: Rows, scale: float) -> torch.Tensor:
    """query (1, H, T, D), key and value (1, KVH, kv, D) -> (1, T, H, D), as transformers'
    attention functions return it; each row over the keys `rows` gives it."""
    _, h, t, d = query.shape
    q = query[0].transpose(0, 1).contiguous()  # (T, H, D)
    out = torch.empty(t, h, d, dtype=torch.float32)
    library().hvd_attention_f32(ptr(q), t, h, key.shape[1], d, ptr(key), ptr(value), key.stride(1),
                                ptr(rows.base), ptr(rows.path), ptr(rows.off), float(scale), ptr(out))
    return out[None]
