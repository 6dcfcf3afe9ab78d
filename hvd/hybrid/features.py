"""Features of a cache draft, computed before it is verified (HVD, arXiv 2606.01019).

Nothing here reads the target's internals: the cache drafter's own match statistics, where
the request is, how recent steps went, and what the draft text looks like. `FEATURES` fixes
the order of the vector the predictor sees; traces and inference both go through
`feature_vector`, so training and serving cannot drift apart.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from numba import njit

from hvd.types import Draft

RECENT = 3  # last accepted lengths kept as features
WINDOW = 16  # steps in the rolling cache-selection rate

# Character classes counted over a draft's text (the draft-structure features).
CHAR_CLASSES: dict[str, str] = {
    "whitespace": " \t",
    "newline": "\n",
    "punctuation": ".,;:!?'\"`",
    "brackets": "()[]{}<>",
    "delimiters": "=+-*/%&|^~#@$\\_",
}

FEATURES: tuple[str, ...] = (
    "score", "match_length", "draft_length", "source_global", "log_support",
    "prompt_len", "generated", "relative_position",
    "cache_rate", *(f"accepted_{i}" for i in range(1, RECENT + 1)), "cache_accepted_mean",
    *(f"n_{c}" for c in CHAR_CLASSES),
)


def token_class_counts(token_texts: Sequence[str]) -> np.ndarray:
    """(vocab, len(CHAR_CLASSES)) uint8: how many characters of each class each token holds."""
    out = np.zeros((len(token_texts), len(CHAR_CLASSES)), dtype=np.uint8)
    for t, text in enumerate(token_texts):
        for c, chars in enumerate(CHAR_CLASSES.values()):
            out[t, c] = min(sum(text.count(ch) for ch in chars), 255)
    return out


@dataclass
class StepHistory:
    """What the hybrid remembers about earlier steps of one request."""

    accepted: deque = field(default_factory=lambda: deque([0] * RECENT, maxlen=RECENT))
    chose_cache: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    cache_accepted: deque = field(default_factory=lambda: deque(maxlen=WINDOW))

    def record(self, chose_cache: bool, accepted: int) -> None:
        self.accepted.append(accepted)
        self.chose_cache.append(chose_cache)
        if chose_cache:
            self.cache_accepted.append(accepted)


def feature_vector(draft: Draft, prompt_len: int, generated: int, history: StepHistory,
                   classes: np.ndarray) -> np.ndarray:
    """(len(FEATURES),) float32 for a (possibly empty) cache draft."""
    f = draft.features
    rate = sum(history.chose_cache) / len(history.chose_cache) if history.chose_cache else 0.0
    mean = sum(history.cache_accepted) / len(history.cache_accepted) if history.cache_accepted else 0.0
    x = np.empty(len(FEATURES), dtype=np.float32)
    x[:_HEAD] = (
        f.score, f.match_length, float(len(draft)), f.source_global, math.log1p(f.support),
        math.log1p(prompt_len), math.log1p(generated), generated / max(prompt_len + generated, 1),
        rate, *history.accepted, mean,
    )
    return _add_class_counts(x, _HEAD, np.array(draft.tokens, dtype=np.int64), classes)


_HEAD = len(FEATURES) - len(CHAR_CLASSES)  # features before the character-class counts


@njit(cache=True)
def _add_class_counts(x, start, tokens, classes):
    """x[start:] = the character-class counts of `tokens` summed (one compiled loop: it runs
    every step right after a verification has flushed the caches, where numpy's fancy
    indexing and sum would pay for their cold code)."""
    for c in range(classes.shape[1]):
        x[start + c] = 0.0
    for t in tokens:
        for c in range(classes.shape[1]):
            x[start + c] += classes[t, c]
    return x


def vocab_classes(tokenizer, vocab_size: int) -> np.ndarray:
    """(vocab, classes) character-class counts of every token's text."""
    n = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(n)]) + [""] * (vocab_size - n)  # = decode([i]) each, in one call
    return token_class_counts(texts)
