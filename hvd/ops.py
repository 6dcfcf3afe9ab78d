"""What one request's decode loop (`Engine`'s `_steps`) yields: the target work it asks for
(`Prefill`, `Verify`, `Commit`, `Hidden`), answered by whoever drives it (the engine alone, or
the `Scheduler` beside other requests), and the `Chunk`s of committed text, the last carrying
the `Result`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hvd.types import Draft, GenerationStats


@dataclass
class Result:
    text: str
    token_ids: list[int]
    stats: GenerationStats

    def to_dict(self) -> dict:
        return {"text": self.text, "token_ids": self.token_ids, "stats": self.stats.to_dict()}


@dataclass
class Chunk:
    """A streamed piece: new text and the token ids committed by one step."""

    text: str
    token_ids: list[int]
    result: Optional[Result] = None  # set on the last chunk


@dataclass(frozen=True)
class Prefill:
    """Target work a request asks for: prefill `ids` (keeping `hidden_layers`' states); the
    reply is the logits (vocab,) after the last one."""

    ids: list[int]
    hidden_layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Verify:
    """Verify `draft` after `root`; the reply is each row's argmax (`greedy`) or the logits (1+n, vocab)."""

    root: int
    draft: Draft
    greedy: bool


@dataclass(frozen=True)
class Verified:
    """The reply to a `Verify`: `out` (each row's argmax, or the logits) and the seconds the
    verify is charged, for the drafters that price drafts by it; None: the loop's own clock (a
    request alone). In a batch the step is shared: a request is charged its share of the
    step's fixed cost and the marginal cost of its own rows (hvd/scheduler.py)."""

    out: object
    seconds: Optional[float] = None


@dataclass(frozen=True)
class Commit:
    """Keep the root and the accepted nodes `path` of the last verify; no reply."""

    path: list[int]


@dataclass(frozen=True)
class Hidden:
    """The kept layers' hidden states of the committed tokens; the reply is `Target.hidden()`."""


HIDDEN = Hidden()
