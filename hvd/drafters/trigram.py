"""A static tri-gram table P(c | a, b): counted over token sequences, top-k successors kept.

Layout (compact, sorted, memory-mappable):
    keys     (K,)   int64    bigram key a * vocab + b, ascending
    offsets  (K+1,) int64    successors of keys[i] are succ[offsets[i]:offsets[i+1]]
    succ     (E,)   int32    successor token ids, most probable first
    weight   (E,)   float32  P(c | a, b), normalised over *all* successors counted (before top-k)
Saved as an uncompressed .npz.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

from hvd.read_once import read_once

PathLike = Union[str, Path]


@dataclass(frozen=True)
class TrigramTable:
    vocab: int
    keys: np.ndarray  # (K,) int64 sorted bigram keys a * vocab + b
    offsets: np.ndarray  # (K+1,) int64
    succ: np.ndarray  # (E,) int32
    weight: np.ndarray  # (E,) float32
    meta: dict[str, str] = field(default_factory=dict)  # provenance: tokenizer, corpus sizes, build time

    @property
    def n_bigrams(self) -> int:
        return int(self.keys.shape[0])

    @property
    def n_entries(self) -> int:
        return int(self.succ.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.offsets, self.succ, self.weight))

    def successors(self, a: int, b: int) -> dict[int, float]:
        """{c: P(c | a, b)} of the kept successors (empty when (a, b) was never seen)."""
        key = a * self.vocab + b
        i = int(np.searchsorted(self.keys, key))
        if i == self.n_bigrams or int(self.keys[i]) != key:
            return {}
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return dict(zip(self.succ[lo:hi].tolist(), self.weight[lo:hi].tolist()))

    @staticmethod
    def empty(vocab: int) -> "TrigramTable":
        return TrigramTable(vocab, np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


def count_trigrams(sequences: Iterable[Sequence[int]], vocab: int, top_k: int = 12) -> TrigramTable:
    """Count every (a, b) -> c over `sequences` (token ids < vocab), normalise per bigram, keep top_k."""
    if vocab <= 0 or vocab ** 3 >= 2 ** 63:
        raise ValueError(f"vocab {vocab} out of range for int64 trigram codes")
    codes = []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)  # (L,)
        if s.shape[0] >= 3:
            if s.min() < 0 or s.max() >= vocab:
                raise ValueError("token id outside the vocabulary")
            codes.append((s[:-2] * vocab + s[1:-1]) * vocab + s[2:])  # (L-2,)
    if not codes:
        return TrigramTable.empty(vocab)
    uniq, counts = np.unique(np.concatenate(codes), return_counts=True)  # (U,) each, sorted by code
    bigram, nxt = uniq // vocab, uniq % vocab  # (U,) each; grouped by bigram since codes are sorted
    starts = np.flatnonzero(np.r_[True, bigram[1:] != bigram[:-1]])  # (K,) first row of each bigram
    totals = np.add.reduceat(counts, starts)  # (K,)
    group = np.repeat(np.arange(starts.shape[0]), np.diff(np.r_[starts, uniq.shape[0]]))  # (U,) bigram index
    order = np.lexsort((nxt, -counts, group))  # (U,) by bigram, then count descending, then token id
    rank = np.arange(order.shape[0]) - starts[group[order]]  # (U,) rank within its bigram
    keep = order[rank < top_k]  # (E,)
    kept_per_group = np.bincount(group[keep], minlength=starts.shape[0])  # (K,)
    offsets = np.r_[0, np.cumsum(kept_per_group)].astype(np.int64)  # (K+1,)
    weight = (counts[keep] / totals[group[keep]]).astype(np.float32)  # (E,)
    return TrigramTable(vocab, bigram[starts].astype(np.int64), offsets, nxt[keep].astype(np.int32), weight)


def save(table: TrigramTable, path: PathLike) -> None:
    """Write an uncompressed .npz (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    meta = np.array([f"{k}={v}" for k, v in table.meta.items()], dtype=str)  # (m,)
    np.savez(tmp, vocab=np.int64(table.vocab), keys=table.keys, offsets=table.offsets,
             succ=table.succ, weight=table.weight, meta=meta)
    tmp.replace(path)


def load_shared(path: PathLike) -> TrigramTable:
    """`load`, read once per file version and shared (read-only arrays): every fresh drafter
    over the same datastore reuses it."""
    return read_once(_load_frozen, path)


def _load_frozen(path: Path) -> TrigramTable:
    table = load(path)
    for a in (table.keys, table.offsets, table.succ, table.weight):
        a.setflags(write=False)
    return table


def load(path: PathLike) -> TrigramTable:
    """Read a table written by `save`."""
    with np.load(Path(path)) as z:
        arrays = {k: z[k] for k in z.files}
    meta = dict(str(x).split("=", 1) for x in arrays["meta"].tolist())
    return TrigramTable(int(arrays["vocab"]), arrays["keys"], arrays["offsets"], arrays["succ"], arrays["weight"], meta)
