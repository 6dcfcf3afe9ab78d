"""Prompt lookup (`pld`): copy what followed the most recent earlier match of the context's tail."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hvd.drafters.base import Capabilities, DecodeContext
from hvd.types import Draft


@dataclass(frozen=True)
class PLDConfig:
    min_ngram: int = 2
    max_ngram: int = 4
    max_draft: int = 16


def find_continuation(tokens: np.ndarray, min_n: int, max_n: int, k: int) -> tuple[int, np.ndarray]:
    """(n, up to k tokens) following the most recent earlier occurrence of the last n tokens,
    trying the longest n first. tokens: (L,) int64. Returns (0, empty) when nothing matches."""
    length = len(tokens)
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        tail = tokens[length - n:]  # (n,)
        windows = np.lib.stride_tricks.sliding_window_view(tokens[: length - 1], n)  # (L-n, n)
        hits = np.flatnonzero((windows == tail).all(axis=1))  # starts of earlier matches
        if len(hits):
            start = int(hits[-1]) + n
            return n, tokens[start : start + k]
    return 0, tokens[:0]


class PromptLookupDrafter:
    name = "pld"
    capabilities = Capabilities()

    def __init__(self, config: PLDConfig = PLDConfig()) -> None:
        self.config = config
        self._tokens = np.zeros(0, dtype=np.int64)

    def for_request(self) -> "PromptLookupDrafter":
        return PromptLookupDrafter(self.config)

    def begin(self, prompt: Sequence[int]) -> None:
        self._tokens = np.asarray(prompt, dtype=np.int64)

    def propose(self, ctx: DecodeContext) -> Draft:
        k = min(self.config.max_draft, ctx.max_draft)
        if k <= 0:
            return Draft.empty()
        n, cont = find_continuation(self._tokens, self.config.min_ngram, self.config.max_ngram, k)
        return Draft.chain(cont.tolist(), match_length=float(n), draft_length=float(len(cont)))

    def observe(self, committed: Sequence[int]) -> None:
        self._tokens = np.concatenate([self._tokens, np.asarray(committed, dtype=np.int64)])

    def end(self, output: Sequence[int]) -> None:
        pass
