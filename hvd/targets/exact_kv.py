"""The exact target's KV cache of one sequence, and the rows of one forward over many sequences.

A sequence's cache holds float16 keys and values per layer: keys (layers, kv_heads, capacity/8,
d, 8), grouped by 8 slots and transposed so 8 keys' scores come out of one fma chain; values
(layers, kv_heads, capacity, d). Slot = position for committed tokens; a verify writes its rows
past them. A `Rows` entry says which tokens one forward computes for one sequence and which
keys each of them sees (`visibility`); `pack` lays several entries out for one
`hvd_layer_batch` call, in which each sequence's rows attend only to its own cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch


class KVCache:
    """One sequence's keys and values, grown by doubling (64-slot steps)."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int) -> None:
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.k: Optional[torch.Tensor] = None  # (layers, kv_heads, capacity/8, d, 8) float16
        self.v: Optional[torch.Tensor] = None  # (layers, kv_heads, capacity, d) float16

    @property
    def capacity(self) -> int:
        return 0 if self.v is None else self.v.shape[2]

    def ensure(self, n: int) -> None:
        """Room for n slots (the slots held so far are kept)."""
        cap = self.capacity
        if n <= cap:
            return
        self._grow(max(2 * cap, -(-max(n, 256) // 64) * 64))

    def reserve(self, n: int) -> None:
        """Room for n slots, allocated to fit (n rounded up to 64, at least 256) where `ensure`
        would double: for a sequence whose most slots are known in advance."""
        if n > self.capacity:
            self._grow(-(-max(n, 256) // 64) * 64)

    def _grow(self, new: int) -> None:
        cap = self.capacity
        k = torch.zeros(self.layers, self.kv_heads, new // 8, self.head_dim, 8, dtype=torch.float16)
        v = torch.zeros(self.layers, self.kv_heads, new, self.head_dim, dtype=torch.float16)
        if self.k is not None:
            k[:, :, : cap // 8], v[:, :, :cap] = self.k, self.v
        self.k, self.v = k, v

    def nbytes(self) -> int:
        return 0 if self.k is None else self.k.numel() * 2 + self.v.numel() * 2


@dataclass(frozen=True)
class Rows:
    """Tokens `ids` of one sequence written at slots past..past+T-1 at positions `pos` (T,);
    paths[i]: query i's slots from the root to itself (None: a causal chain, slot = position)."""

    cache: KVCache
    ids: Sequence[int]
    past: int
    pos: torch.Tensor
    paths: Optional[Sequence[Sequence[int]]] = None


def visibility(past: int, T: int, paths: Optional[Sequence[Sequence[int]]]) -> tuple[list[int], list[int], list[int]]:
    """Per query: base (keys in slots 0..base-1, in order) and the rest of its path (slots),
    flattened with offsets (T + 1). A path's leading run of consecutive slots from `past` joins
    the base."""
    if paths is None:  # a causal chain: query t sees slots 0..past+t
        return list(range(past + 1, past + T + 1)), [], [0] * (T + 1)
    base, flat, off = [], [], [0]
    for p in paths:
        run = 0
        while run < len(p) and p[run] == past + run:
            run += 1
        base.append(past + run)
        flat.extend(p[run:])
        off.append(len(flat))
    return base, flat, off


@dataclass(frozen=True)
class Packed:
    """Several sequences' rows laid out for one `hvd_layer_batch` call."""

    ids: torch.Tensor  # (T,) int64
    pos: torch.Tensor  # (T,) int32
    slots: torch.Tensor  # (T,) int32: each row's slot in its own cache
    base: torch.Tensor  # (T,) int32
    path: torch.Tensor  # (P or 1,) int32
    off: torch.Tensor  # (T + 1,) int32, into `path`
    rows: torch.Tensor  # (nseq + 1,) int32: sequence s owns rows rows[s] .. rows[s+1]-1
    caches: tuple[KVCache, ...]

    def cache_pointers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each sequence's key and value addresses for every layer, (layers, nseq) int64 each
        (row l: the `void *[nseq]` that layer l's call reads), and their capacities (nseq,) int32:
        made once a forward, not once a layer."""
        k0 = np.array([c.k.data_ptr() for c in self.caches], dtype=np.int64)
        v0 = np.array([c.v.data_ptr() for c in self.caches], dtype=np.int64)
        ks = np.array([c.k[0].numel() * c.k.element_size() for c in self.caches], dtype=np.int64)
        vs = np.array([c.v[0].numel() * c.v.element_size() for c in self.caches], dtype=np.int64)
        layer = np.arange(self.caches[0].layers if self.caches else 0, dtype=np.int64)[:, None]
        caps = np.array([c.capacity for c in self.caches], dtype=np.int32)
        return k0 + layer * ks, v0 + layer * vs, caps


def pack(parts: Sequence[Rows]) -> Packed:
    """Every part's rows one after another, each part's caches grown to hold its rows."""
    ids, pos, slots, base, path, off, rows = [], [], [], [], [], [], [0]
    for p in parts:
        T = len(p.ids)
        p.cache.ensure(p.past + T)
        b, flat, o = visibility(p.past, T, p.paths)
        shift = len(path)
        ids.extend(int(t) for t in p.ids)
        pos.extend(int(x) for x in p.pos.tolist())
        slots.extend(range(p.past, p.past + T))
        base.extend(b)
        off.extend(shift + x for x in o[:-1])
        path.extend(flat)
        rows.append(rows[-1] + T)
    off.append(len(path))
    i32 = lambda xs: torch.tensor(xs, dtype=torch.int32)
    return Packed(torch.tensor(ids, dtype=torch.int64), i32(pos), i32(slots), i32(base), i32(path or [0]), i32(off),
                  i32(rows), tuple(p.cache for p in parts))
