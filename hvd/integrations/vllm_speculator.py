"""hvd's drafting as a registered speculative method of vLLM 0.34 (its V2 model runner).

hvd's `vllm.general_plugins` entry point (`vllm_plugin.register`) registers the method `hvd`
in every vLLM process, so one flag turns it on:

    vllm serve <model> --speculative-config '{"method": "hvd", "num_speculative_tokens": 16}'

(`"speculator_options": {"method": "suffix"}` for the cache arm alone). vLLM builds
`HvdSpeculator(vllm_config, device, req_states)` in each worker and calls `propose` every step
with the batch; requests are known by their state slot (`add_request`) and leave by id
(`on_requests_finished`, while their history is still readable), so each request's drafter is
keyed by slot: rows may move and two requests may share a prompt. The drafts come from the
same core as the <= 0.33 proposer (hvd/integrations/core.py); reading the rows' new tokens is
one device-to-host copy a step (the drafters are host-side).

vLLM 0.34 verifies `num_speculative_tokens` slots a row each step whatever is proposed; a
slot hvd leaves empty is -1 (vLLM's own placeholder), which no target token matches. With
`"enable_adaptive_verification": true` vLLM trims slots by the speculator's confidences, and
hvd's are 1 for its draft and 0 for the empty slots, so no-draft and cut decisions then save
verify rows; without it the core prices every row at the full width. Per request,
`extra_args={"speculative": {"max_draft_tokens": N}}` caps a request's drafts (0: none) when
vLLM also loads `hvd.integrations.vllm_switch.SpeculationSwitch` (`--logits-processors`): the
speculator sees no request parameters, the logits processors do.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
import torch
from vllm.v1.worker.gpu.spec_decode.speculator import BaseSpeculator
from vllm.v1.worker.gpu.spec_decode.speculator_config import SpeculatorConfig

from hvd.drafters.base import Drafter
from hvd.integrations import vllm_switch
from hvd.integrations.core import Row, SpeculationCore, read_options


class HvdSpeculatorConfig(SpeculatorConfig):
    """The `hvd` method's config: no draft model (the target's config gives the vocabulary)."""

    speculator_class = "hvd.integrations.vllm_speculator.HvdSpeculator"
    supported_options = frozenset({"speculator_options"})
    adaptive_verification_uses_draft_logits = False  # confidences from the speculator, no draft logits


@dataclass
class _Request:
    drafter: Drafter
    tokens: list[int]  # prompt + committed output, as far as the drafter has seen
    prompt_len: int


class HvdSpeculator(BaseSpeculator):
    """See the module docstring."""

    def __init__(self, vllm_config: Any, device: torch.device, req_states: Any) -> None:
        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        self.device, self.req_states = device, req_states
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        self.vocab_size = int(vllm_config.model_config.get_vocab_size())
        self.enable_adaptive_verification = bool(getattr(spec, "enable_adaptive_verification", False))
        config = read_options(getattr(spec, "speculator_options", None), self.k)
        self.config = replace(config, full_width=not self.enable_adaptive_verification)
        self.core = SpeculationCore(self.config, self.vocab_size)
        self.core.warm_up()  # kernels and tables readied at start, not in the first request
        self.draft_token_confidence_probs = torch.zeros(req_states.max_num_reqs, self.k, dtype=torch.float32,
                                                        device=device)
        self._requests: dict[int, _Request] = {}  # by request-state slot
        self._joined: set[int] = set()  # slots given to new requests since the last propose

    def init_cudagraph_manager(self, cudagraph_mode: Any) -> None:
        """Nothing to capture: drafting runs on the host."""

    def capture(self) -> None:
        """Nothing to capture: drafting runs on the host."""

    def add_request(self, req_index: int) -> None:
        self._requests.pop(req_index, None)  # a preempted occupant's state: it starts again
        self._joined.add(req_index)

    def on_requests_finished(self, finished_req_ids: set[str]) -> None:
        for req_id in finished_req_ids:
            index = self.req_states.req_id_to_index.get(req_id)
            request = self._requests.pop(index, None) if index is not None else None
            if request is not None:
                total = int(self.req_states.total_len.gpu[index])
                tokens = self.req_states.all_token_ids.gpu[index, len(request.tokens):total].tolist()
                self.core.finish(request.drafter, (request.tokens + tokens)[request.prompt_len:])

    def reset_state(self) -> None:
        """Forget what was learnt across requests (vLLM calls this after its warm-up)."""
        self.core = SpeculationCore(self.config, self.vocab_size)
        self._requests.clear()

    def propose(self, input_batch: Any, attn_metadata: Any, slot_mappings: Any, last_hidden_states: Any,
                aux_hidden_states: Any, num_sampled: torch.Tensor, num_rejected: torch.Tensor,
                last_sampled: torch.Tensor, next_prefill_tokens: torch.Tensor, temperature: torch.Tensor,
                seeds: torch.Tensor, dp_sync_state: Any = None, dummy_run: bool = False,
                skip_attn_for_dummy_run: bool = False, mm_inputs: Any = None, is_profile: bool = False,
                num_speculative_tokens: Optional[int] = None) -> torch.Tensor:
        """[num_reqs, K] int64 draft tokens, -1 where a slot holds none."""
        num_reqs = int(input_batch.num_reqs)
        drafts = np.full((num_reqs, self.k), -1, dtype=np.int64)
        if dummy_run or is_profile or num_reqs == 0:
            return torch.from_numpy(drafts).to(self.device)
        k = min(self.k, int(num_speculative_tokens or self.k))
        slots = np.asarray(input_batch.idx_mapping_np[:num_reqs], dtype=np.int64)
        sampled = num_sampled[:num_reqs].cpu().numpy()
        totals = self.req_states.total_len.gpu[torch.from_numpy(slots)].cpu().numpy()
        rows: list[Row] = []
        at: list[int] = []
        prefilled = bool(self._joined) or bool((sampled == 0).any())
        self._joined.clear()
        for b in range(num_reqs):
            if sampled[b] == 0:
                continue  # a prompt in chunks: no token to draft after yet
            row = self._row(int(slots[b]), int(totals[b]), int(sampled[b]))
            row.budget = max(min(k, self.max_model_len - int(totals[b]) - 1,
                                 vllm_switch.draft_limit(int(slots[b]), k)), 0)
            rows.append(row)
            at.append(b)
        confidence = np.zeros((num_reqs, self.k), dtype=np.float32)
        for b, chain in zip(at, self.core.step(rows, prefilled)):
            drafts[b, : len(chain)] = chain
            confidence[b, : len(chain)] = 1.0
        self.draft_token_confidence_probs[:num_reqs] = torch.from_numpy(confidence).to(self.device)
        return torch.from_numpy(drafts).to(self.device)

    def _row(self, slot: int, total: int, sampled: int) -> Row:
        """The row of the request in `slot`, whose history now holds `total` tokens, the last
        `sampled` of them committed this step."""
        request = self._requests.get(slot)
        history = self.req_states.all_token_ids.gpu[slot]
        if request is None:  # a new request: its prompt is what it held before this step's tokens
            prompt = history[: total - sampled].tolist()
            request = _Request(self.core.start(prompt), prompt, len(prompt))
            self._requests[slot] = request
        new = history[len(request.tokens):total].tolist()
        request.tokens.extend(new)
        return Row(request.drafter, request.tokens, request.prompt_len, new, 0)
