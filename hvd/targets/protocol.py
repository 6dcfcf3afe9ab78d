"""What the decode loop, drafters and the bench may ask of a target model, and the pieces every
target shares (configuration, kept hidden states, prefix matching).

Cache convention: after `prefill(prompt)` the KV cache holds the whole prompt and the
logits predict the first new token. Each `verify(root, draft)` appends the root (the last
committed token, whose KV is not cached yet) and every draft node; `commit(path)` then keeps
the root plus the accepted nodes `path`, in order, and drops everything else.

Implementations: `hf.HFTarget` (any transformers causal LM, float32), `lean.LlamaTarget`
(Llama family, bf16, exact where this machine's kernels are batch-invariant) and
`exact.ExactLlamaTarget` (Llama family, int8, batch-invariant by construction).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence, runtime_checkable

import torch

from hvd.types import Draft


class Target(Protocol):
    """What every target provides, and all that callers may use. Optional capabilities are the
    small protocols below (and `hvd.verify.VerifiesArgmax`), each checked with `isinstance`
    once, where its user is built (never inside a request)."""

    precision: str  # what the weights compute in: "float32", "bfloat16", "int8"
    build_id: str  # the target's own compiled kernels ("": none): cost curves and references are keyed by it
    fingerprint: str  # the model's weights as this target runs them (kind, precision, kernels, device): cache keys
    eos_ids: frozenset[int]  # the tokens that end a generation, from the model's generation config (may be empty)
    vocab_size: int
    max_context: int  # positions the model can attend over
    max_draft_nodes: int  # draft nodes one verify takes (more are dropped, last first)

    @property
    def cached_len(self) -> int: ...

    def prefill(self, ids: Sequence[int]) -> torch.Tensor: ...  # (vocab,) logits after the prompt

    def verify(self, root: int, draft: Draft) -> torch.Tensor: ...  # (1 + n, vocab) logits

    def commit(self, path: Sequence[int]) -> None: ...

    def hidden(self) -> dict[int, torch.Tensor]: ...  # layer -> (cached_len, hidden) of committed tokens

    def set_hidden_layers(self, layers: Sequence[int]) -> None: ...  # layers `hidden()` returns from the next prefill on


@runtime_checkable
class SkipsLayers(Protocol):
    """A target that runs one token through a subset of its decoder layers over its own KV cache:
    what self-drafting (`skip_draft.SkipDraft`, the `layerskip` method) needs."""

    num_layers: int

    def skip_step(self, token: int, past: int, offset: int, layers: Sequence[int]) -> int:
        """The greedy next token after `token` at position past + offset through `layers` only,
        attending to the `past` committed tokens and the draft's own positions past..past+offset."""
        ...

    def skip_done(self, past: int, layers: Sequence[int]) -> None:
        """Forget the draft's keys and values past the `past` committed tokens."""
        ...


@runtime_checkable
class HasSharedWeights(Protocol):
    """A target whose frozen tensors a model drafter reads (dflash, and training it)."""

    def shared_weights(self) -> "SharedWeights": ...


@runtime_checkable
class TeacherForced(Protocol):
    """A target that runs a whole sequence outside its decode cache (a drafter's training data)."""

    def teacher_forced(self, ids: Sequence[int], layers: Sequence[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """layer -> hidden states (L, hidden), and the target's argmax after each prefix (L,)."""
        ...


@dataclass(frozen=True)
class SharedWeights:
    """Frozen target tensors a model drafter reads (shared, never copied)."""

    embedding: torch.Tensor  # (vocab, hidden) input embedding table
    head: torch.Tensor  # (vocab, hidden) LM head
    num_layers: int  # decoder layers; hidden-state layer l is the output of layer l (0 = embeddings)
    rms_norm_eps: float
    heads: int  # attention heads, the MLP's width and the rotary base (the config's `rope_theta`,
    intermediate: int  # else 10,000): a drafter sized like the target
    rope_theta: float


def drafter_dims(config) -> tuple[int, int, float]:
    """`SharedWeights`' (heads, intermediate, rope_theta) from a transformers config."""
    return (int(config.num_attention_heads), int(config.intermediate_size),
            float(getattr(config, "rope_theta", 10000.0) or 10000.0))


@dataclass(frozen=True)
class TargetConfig:
    hidden_layers: tuple[int, ...] = ()  # layers whose hidden states to keep (0 = embeddings)
    # Prefix caching: a prefill keeps the cached KV of the longest prefix it shares with the
    # tokens already in the cache and computes only the rest (off by default: benchmarks
    # compare prefill with peers that recompute it).
    reuse_prefix: bool = False


class HiddenStates:
    """Per layer, the hidden states of committed tokens: (capacity, hidden) buffers grown by
    doubling (no copy per step); the owner knows how many rows are valid."""

    def __init__(self) -> None:
        self._bufs: dict[int, torch.Tensor] = {}

    def clear(self) -> None:
        self._bufs = {}

    def write(self, layer: int, start: int, rows: torch.Tensor) -> None:
        """Rows (m, hidden) for positions start..start+m-1 of `layer`."""
        end = start + rows.shape[0]
        buf = self._bufs.get(layer)
        if buf is None or buf.shape[0] < end:
            grown = torch.zeros(max(2 * end, 256), rows.shape[-1], dtype=rows.dtype, device=rows.device)
            if buf is not None:
                grown[: buf.shape[0]] = buf
            buf = self._bufs[layer] = grown
        buf[start:end] = rows

    def views(self, n: int) -> dict[int, torch.Tensor]:
        """layer -> (n, hidden), views, no copy."""
        return {l: buf[:n] for l, buf in self._bufs.items()}


def kept_rows(path: Sequence[int]) -> list[int]:
    """Rows of the last verify forward a commit of `path` keeps: the root and the path."""
    return [0, *(i + 1 for i in path)]


def verify_layout(past: int, draft: Draft) -> tuple[list[list[int]], torch.Tensor]:
    """Where a verify after `past` committed tokens puts its rows (the root, then each draft
    node, at slots past, past+1, ...): per row the slots from the root to itself, and the
    positions (1 + n,) (past + the node's depth)."""
    paths: list[list[int]] = [[past]]
    for j, p in enumerate(draft.parents, start=1):
        paths.append(paths[p + 1] + [past + j])  # parent -1 is the root, row 0
    return paths, torch.tensor([0, *draft.depths()]) + past


class TracksCommits:
    """The request state a batch-1 target keeps around its forwards: the tokens whose KV is
    cached (`_len`, `_ids`), the last verify's root + draft ids and hidden rows, and the kept
    layers' hidden states of committed tokens. A target calls `_reset` when made and
    `_record(past, keep)` when it commits."""

    config: TargetConfig
    _len: int
    _ids: list[int]
    _pending_ids: list[int]
    _pending_hidden: dict[int, torch.Tensor]
    _hidden: HiddenStates

    def _reset(self) -> None:
        """The empty request state."""
        self._len = 0
        self._ids = []
        self._pending_ids = []  # root + draft tokens of the last verify
        self._pending_hidden = {}  # layer -> (1+n, hidden) of the last verify
        self._hidden = HiddenStates()  # rows [0, cached_len) are valid

    @property
    def cached_len(self) -> int:
        return self._len

    def _record(self, past: int, keep: list[int]) -> None:
        """The kept rows (`kept_rows`) of the last verify are committed after `past` tokens."""
        self._len = past + len(keep)
        self._ids[past:] = [self._pending_ids[k] for k in keep]
        for l, h in self._pending_hidden.items():
            self._hidden.write(l, past, h[torch.tensor(keep, device=h.device)])

    def hidden(self) -> dict[int, torch.Tensor]:
        """Views (no copy) of the kept layers' hidden states: layer -> (cached_len, hidden)."""
        return self._hidden.views(self._len)

    def set_hidden_layers(self, layers: Sequence[int]) -> None:
        """Collect these layers' hidden states from the next prefill on (0 = embeddings)."""
        layers = tuple(sorted(set(int(l) for l in layers)))
        if layers != self.config.hidden_layers:
            self.config = replace(self.config, hidden_layers=layers)
            self._hidden.clear()
