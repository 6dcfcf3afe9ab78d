"""`Run`: one timed generation, counted the same way for every method and peer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Run:
    token_ids: list[int]
    ttft: float  # seconds to the first new token (prefill)
    wall: float  # seconds for the whole request
    steps: Optional[int] = None  # target verification forwards, where known
    draft_seconds: float = 0.0
    sources: dict[str, int] = field(default_factory=dict)  # verification steps per drafter (hybrids: per arm)
    forced: int = 0  # tokens a grammar forced (committed without a choice)

    @property
    def decode_tps(self) -> float:
        """Tokens after the first ÷ seconds after the first token."""
        n, t = len(self.token_ids) - 1, self.wall - self.ttft
        return n / t if n > 0 and t > 0 else 0.0

    @property
    def tau(self) -> Optional[float]:
        return (len(self.token_ids) - 1) / self.steps if self.steps else None
