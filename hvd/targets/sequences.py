"""Many requests' sequences in one target: each with a KV cache of its own, their rows computed
together in one forward (`HoldsManySequences`, the exact target). A `RequestSequence` is one request's
view: the tokens whose keys its cache holds and the rows its next prefill chunk or verify adds,
with the same slot layout and commit rule as the single-sequence targets (slot_cache.py)."""
from __future__ import annotations

from typing import Optional, Protocol, Sequence as Seq, runtime_checkable

import torch

from hvd.targets.exact_kv import KVCache, Rows
from hvd.targets.protocol import kept_rows, verify_layout
from hvd.types import Draft, shared_prefix


@runtime_checkable
class HoldsManySequences(Protocol):
    """A target whose forward takes the rows of several sequences, each over its own cache, every
    row's outputs bitwise those of its sequence alone."""

    prefill_chunk: int
    max_context: int
    max_draft_nodes: int

    def new_cache(self) -> KVCache: ...

    def forward_rows(self, parts: Seq[Rows]) -> tuple[list[torch.Tensor], dict]: ...

    def logits(self, h: torch.Tensor) -> torch.Tensor: ...

    def argmax(self, h: torch.Tensor) -> list[int]: ...

    def move_slots(self, cache: KVCache, src: list[int], past: int) -> None: ...


class RequestSequence:
    """One request's sequence: its cache, the tokens whose keys it holds (`ids`), and the tokens
    of the rows last handed out (`pending`)."""

    def __init__(self, target: HoldsManySequences, cache: KVCache) -> None:
        self.target, self.cache = target, cache
        self.ids: list[int] = []
        self.pending: list[int] = []

    @property
    def cached_len(self) -> int:
        return len(self.ids)

    def prefill_rows(self, ids: Seq[int]) -> Rows:
        """The next prefill chunk of `ids` after what the cache holds (chunks at fixed multiples
        of `prefill_chunk`, as a single-sequence prefill cuts them)."""
        start = len(self.ids)
        chunk = self.target.prefill_chunk
        end = min((start // chunk + 1) * chunk, len(ids))
        self.pending = [int(t) for t in ids[start:end]]
        return Rows(self.cache, self.pending, start, torch.arange(start, end))

    def prefilled(self) -> None:
        """The last prefill chunk is cached."""
        self.ids.extend(self.pending)
        self.pending = []

    def verify_rows(self, root: int, draft: Draft) -> Rows:
        """The root and every draft node at slots past..past+n, each seeing its tree ancestors."""
        past = len(self.ids)
        self.pending = [int(root), *draft.tokens]
        paths, pos = verify_layout(past, draft)
        return Rows(self.cache, self.pending, past, pos, paths)

    def commit(self, path: Seq[int]) -> None:
        """Keep the root and the accepted nodes `path` of the last verify (moved down when a
        branch was taken)."""
        past = len(self.ids)
        keep = kept_rows(path)
        if keep != list(range(len(keep))):
            self.target.move_slots(self.cache, [past + k for k in keep], past)
        self.ids.extend(self.pending[k] for k in keep)
        self.pending = []


class PrefixCache:
    """Finished requests' sequences kept for the next request that shares their start (an
    agent's next turn: the same conversation plus a tool result), least recently used first
    out, bounded by the bytes their caches hold. A token's keys depend only on the tokens
    before it, so a kept prefix is bitwise what a prefill would compute."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._kept: list[RequestSequence] = []  # least recently used first

    @property
    def tokens(self) -> int:
        return sum(s.cached_len for s in self._kept)

    @property
    def nbytes(self) -> int:
        return sum(s.cache.nbytes() for s in self._kept)

    def take(self, ids: Seq[int]) -> tuple[Optional[RequestSequence], int]:
        """The kept sequence sharing the longest start with `ids` (the last id always left to
        compute: its logits are the first token's), cut to that start, and the length; (None, 0)
        when none shares a token."""
        best, n = None, 0
        for s in self._kept:
            m = shared_prefix(s.ids, ids[:-1])
            if m > n:
                best, n = s, m
        if best is None:
            return None, 0
        self._kept.remove(best)
        best.ids = best.ids[:n]
        best.pending = []
        return best, n

    def put(self, seq: RequestSequence) -> None:
        """Keep `seq` (most recently used), dropping the least recently used beyond the bound."""
        if seq.cached_len == 0 or seq.cache.nbytes() > self.max_bytes:
            return
        self._kept.append(seq)
        while self.nbytes > self.max_bytes:
            self._kept.pop(0)

    def clear(self) -> None:
        self._kept.clear()
