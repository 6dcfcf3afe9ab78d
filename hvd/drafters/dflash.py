"""DFlash drafter: one forward of a small block-diffusion network drafts K−1 tokens.

The network (`dflash_model.DFlashNet`) reads the target's hidden states of a few layers at
the committed tokens (through `DecodeContext.hidden`) and the target's frozen embedding
table and LM head (`Target.shared_weights()`, shared, never copied). Drafts are the greedy
chain of the block's argmaxes (deterministic: verification reads them as one-hot q), cut to
the depth with the most expected tokens per second: each token's drafter probability is
calibrated online against what the target commits and weighed against the target's measured
verify-cost curve (`tree_budget.TreeSizer`, shared with aded).

Per step only the tokens committed since the last call are projected into the cached
context keys/values; the cache keeps the last `window` tokens.

Draft vocabulary: reading the whole LM head (vocab x hidden) for every draft is most of a
draft's cost on a memory-bound CPU, so drafts are scored over the tokens the drafter saw as
labels in training (saved with the checkpoint, most frequent first) plus every token of the
current prompt, gathered from the target's head once per request. A token outside that set
is never drafted (a wrong guess costs τ, never exactness). Checkpoints are a directory
with `dflash.json` (the config) and `dflash.safetensors` (the weights, fp16), written by
`hvd train drafter`; `load(path)` reads one.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from hvd.assets import CONFIG_FILE, WEIGHTS_FILE
from hvd.drafters.base import Capabilities, DecodeContext
from hvd.errors import MethodUnavailable
from hvd.drafters.dflash_model import DFlashConfig, DFlashNet
from hvd.drafters.tree_budget import CalibrationConfig, TreeSizer
from hvd.cost.curve import VerifyCost, monotone
from hvd.targets.protocol import HasSharedWeights, SharedWeights
from hvd.types import Draft, DraftFeatures

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
CALIBRATION = CalibrationConfig(depth_edges=(1, 2, 4, 8))  # a block is deep: acceptance keeps falling past 4


class CheckpointMissing(MethodUnavailable):
    """A trained drafter that is not there; the message says how to train it."""


class CheckpointMismatch(MethodUnavailable):
    """A drafter trained for another target."""


VOCAB_KEY = "draft_vocab"  # (n,) int32 token ids in the weights file, beside the network's tensors


def save(net: DFlashNet, out: Path, extra: Optional[dict] = None, vocab: Optional[torch.Tensor] = None) -> None:
    """Write the checkpoint; `vocab`: the draft vocabulary (token ids, most frequent first)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    # fp16 on disk halves the checkpoint; loads back as fp32
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    if vocab is not None:
        tensors[VOCAB_KEY] = vocab.to(torch.int32).contiguous()
    save_file(tensors, str(out / WEIGHTS_FILE))
    info = {"config": json.loads(net.c.to_json()), **(extra or {})}
    (out / CONFIG_FILE).write_text(json.dumps(info, indent=2))


def load(path: Path) -> tuple[DFlashNet, Optional[torch.Tensor]]:
    """The network and its draft vocabulary (None: score the whole vocabulary)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        flags = " --uniform" if path.name.endswith("-uniform") else ""
        raise CheckpointMissing(f"no trained DFlash drafter in {path}; train one with: hvd train drafter{flags} --out {path}")
    info = json.loads((path / CONFIG_FILE).read_text())
    net = DFlashNet(DFlashConfig.from_dict(info["config"]))
    tensors = load_file(str(path / WEIGHTS_FILE))
    vocab = tensors.pop(VOCAB_KEY, None)
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    return net.eval(), None if vocab is None else vocab.long()


class DFlashDrafter:
    name = "dflash"

    def __init__(self, net: DFlashNet, weights: SharedWeights, name: str = "dflash",
                 cost: Optional[VerifyCost] = None, calibration: CalibrationConfig = CALIBRATION,
                 vocab: Optional[torch.Tensor] = None) -> None:
        """`cost`: the target's verify-cost curve; with it each block is cut to the depth with the
        most expected tokens per second (the drafter's probabilities, calibrated online); None:
        every block is drafted whole. `vocab`: the draft vocabulary (None: all tokens)."""
        c = net.c
        if weights.embedding.shape != (c.vocab, c.hidden):
            raise CheckpointMismatch(f"{name}: drafter trained for vocab {c.vocab} x hidden {c.hidden}, the target has "
                                     f"{tuple(weights.embedding.shape)}; train one for it with: hvd prepare --model MODEL --drafter")
        if max(c.target_layers) > weights.num_layers:
            raise CheckpointMismatch(f"drafter reads target layer {max(c.target_layers)}; the target has {weights.num_layers}")
        self.net, self.w, self.name = net.eval().to(weights.embedding.dtype), weights, name  # the target's dtype
        self.capabilities = Capabilities(needs_hidden_states=c.target_layers)
        self.sizer = TreeSizer(None if cost is None else monotone(cost), calibration)
        self.vocab = None if vocab is None else vocab[vocab < c.vocab]
        self._ids: Optional[torch.Tensor] = None  # (n,) this request's draft vocabulary (None: all)
        self._head = weights.head  # (n, hidden) its rows of the target's LM head
        self._reset()

    def _reset(self) -> None:
        self._seen = 0  # committed tokens whose features are in the context cache
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer (1, heads, ≤window, d)

    def for_request(self) -> "DFlashDrafter":
        """A drafter for one request: its own context cache, draft vocabulary and sizer state;
        the network, the target's weights and the sizer's calibration shared."""
        fork = copy.copy(self)
        fork.sizer = self.sizer.for_request()
        fork._ids, fork._head = None, self.w.head
        fork._reset()
        return fork

    def begin(self, prompt: Sequence[int]) -> None:
        self._reset()
        self.sizer.forget()
        if self.vocab is not None:
            seen = torch.tensor(list(prompt), dtype=torch.long)
            self._ids = torch.cat([self.vocab, seen[~torch.isin(seen, self.vocab)].unique()])  # (n,)
            self._head = self.w.head[self._ids]  # (n, hidden)

    @torch.inference_mode()
    def propose(self, ctx: DecodeContext) -> Draft:
        if ctx.hidden is None:
            raise RuntimeError("dflash needs the target's hidden states (DecodeContext.hidden)")
        t0 = time.perf_counter()
        self.sizer.forget()
        n = len(ctx.tokens) - 1  # the last token is the block's first; features exist for the rest
        self._catch_up(ctx.hidden, n)
        depth = min(self.net.c.block - 1, ctx.max_draft)
        if depth <= 0:
            return Draft.empty()
        first = torch.tensor([ctx.tokens[-1]])  # (1,)
        x = self.net.block_input(first, self.w.embedding)  # (1, K, hidden)
        pos = torch.arange(n, n + self.net.c.block)[None]  # (1, K)
        h = self.net(x, pos, self._kv)[0, 1 : 1 + depth]  # (depth, hidden)
        logits = h @ self._head.t()  # (depth, n) over the draft vocabulary
        best = logits.float().softmax(-1).max(-1)  # (depth,) the drafter's probability of each drafted token
        picked = best.indices if self._ids is None else self._ids[best.indices]
        tokens, scores = picked.tolist(), best.values.tolist()
        keep, probs = self.sizer.choose(tokens, list(range(-1, depth - 1)), scores, time.perf_counter() - t0,
                                        len(ctx.tokens))
        return Draft(tuple(tokens[: len(keep)]), tuple(range(-1, len(keep) - 1)),
                     DraftFeatures(draft_length=float(len(keep)), expected_accepted=float(probs[: len(keep)].sum())))

    def _catch_up(self, hidden: dict[int, torch.Tensor], n: int) -> None:
        """Project the features of tokens [seen, n) into the context cache (last `window` kept)."""
        w = self.net.c.window
        start = max(self._seen, n - w)
        if start < n:
            feats = torch.cat([hidden[l][start:n] for l in self.net.c.target_layers], dim=-1)[None]  # (1, m, L*hidden)
            new = self.net.context(feats, torch.arange(start, n)[None])
            if self._kv and start == self._seen:
                new = [(torch.cat([k0, k1], 2)[:, :, -w:], torch.cat([v0, v1], 2)[:, :, -w:])
                       for (k0, v0), (k1, v1) in zip(self._kv, new)]
            self._kv = new
        self._seen = n

    def observe(self, committed: Sequence[int]) -> None:
        self.sizer.observe(committed)

    def end(self, output: Sequence[int]) -> None:
        pass


def for_target(target, path: Optional[Path] = None, name: str = "dflash", size_by_cost: bool = True) -> DFlashDrafter:
    """The trained drafter in `path` (default: the packaged checkpoint `name`) over `target`;
    with `size_by_cost`, its blocks are cut by the target's verify-cost curve (measured once
    per machine and cached: call this before a generation, never during one)."""
    if not isinstance(target, HasSharedWeights):
        raise MethodUnavailable(f"{name} reads the target's embedding and LM head; {type(target).__name__} shares none")
    path = Path(path) if path is not None else CHECKPOINTS / name
    net, vocab = load(path)
    cost = None
    if size_by_cost:
        from hvd.targets.verify_cost import cached
        from hvd.machine import cache_dir

        cost = cached(target, cache_dir())
    return DFlashDrafter(net, target.shared_weights(), name, cost, vocab=vocab)
