"""`oracle`: drafts the true continuation (from a recorded reference output): the ceiling."""
from __future__ import annotations

from typing import Sequence

from hvd.drafters.base import Capabilities, DecodeContext
from hvd.types import Draft


class OracleDrafter:
    """Proposes `reference` tokens after the committed output while the two agree."""

    name = "oracle"
    capabilities = Capabilities()

    def __init__(self, reference: Sequence[int], max_draft: int = 32) -> None:
        self.reference = list(reference)
        self.max_draft = max_draft

    def for_request(self) -> "OracleDrafter":
        return OracleDrafter(self.reference, self.max_draft)

    def begin(self, prompt: Sequence[int]) -> None:
        self._prompt_len = len(prompt)

    def propose(self, ctx: DecodeContext) -> Draft:
        done = ctx.tokens[ctx.prompt_len :]
        if self.reference[: len(done)] != done:
            return Draft.empty()
        k = min(self.max_draft, ctx.max_draft)
        return Draft.chain(self.reference[len(done) : len(done) + k])

    def observe(self, committed: Sequence[int]) -> None:
        pass

    def end(self, output: Sequence[int]) -> None:
        pass
