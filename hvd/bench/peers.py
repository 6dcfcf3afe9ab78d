"""Peers measured in the same process on the same token ids: Hugging Face `generate`, greedy
(`hf`) and with prompt lookup (`hf-pld`). Each returns the same measurements as our engine."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class Run:
    """One timed generation, counted the same way for every method."""

    token_ids: list[int]
    ttft: float  # seconds to the first new token (prefill)
    wall: float  # seconds for the whole request
    steps: Optional[int] = None  # target verification forwards, where known
    draft_seconds: float = 0.0

    @property
    def decode_tps(self) -> float:
        """Tokens after the first ÷ seconds after the first token."""
        n, t = len(self.token_ids) - 1, self.wall - self.ttft
        return n / t if n > 0 and t > 0 else 0.0

    @property
    def tau(self) -> Optional[float]:
        return (len(self.token_ids) - 1) / self.steps if self.steps else None


class _FirstTokenClock:
    """A `generate` streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: Optional[float] = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:  # call 1 is the prompt itself
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def hf_generate(model, ids: list[int], max_new_tokens: int, eos: frozenset[int], **extra) -> Run:
    x = torch.tensor([ids], device=model.device)
    clock = _FirstTokenClock()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=sorted(eos), pad_token_id=sorted(eos)[0], streamer=clock, **extra,
        )
    wall = time.perf_counter() - t0
    new = out[0, len(ids):].tolist()
    return Run(new, (clock.first or time.perf_counter()) - t0, wall)


PEERS: dict[str, Callable[..., Run]] = {
    "hf": lambda model, ids, n, eos: hf_generate(model, ids, n, eos),
    "hf-pld": lambda model, ids, n, eos: hf_generate(model, ids, n, eos, prompt_lookup_num_tokens=10),
}
