"""DFlash drafter: one forward of a small block-diffusion network drafts K−1 tokens.

The network (`dflash_model.DFlashNet`) reads the target's hidden states of a few layers at
the committed tokens (through `DecodeContext.hidden`) and the target's frozen embedding
table and LM head (`Target.shared_weights()`, shared, never copied). Drafts are the greedy
chain of the block's argmaxes (deterministic: verification reads them as one-hot q).

Per step only the tokens committed since the last call are projected into the cached
context keys/values; the cache keeps the last `window` tokens. Checkpoints are a directory
with `dflash.json` (the config) and `dflash.safetensors` (the weights, fp16), written by
`hvd train drafter`; `load(path)` reads one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from hvd.drafters.base import Capabilities, DecodeContext
from hvd.drafters.registry import MethodUnavailable
from hvd.drafters.dflash_model import DFlashConfig, DFlashNet
from hvd.target import SharedWeights
from hvd.types import Draft

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
CONFIG_FILE, WEIGHTS_FILE = "dflash.json", "dflash.safetensors"


class CheckpointMissing(MethodUnavailable):
    """A trained drafter that is not there; the message says how to train it."""


class CheckpointMismatch(MethodUnavailable):
    """A drafter trained for another target."""


def save(net: DFlashNet, out: Path, extra: Optional[dict] = None) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    # fp16 on disk halves the checkpoint (9M parameters: 18 MB); loads back as fp32
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE))
    info = {"config": json.loads(net.c.to_json()), **(extra or {})}
    (out / CONFIG_FILE).write_text(json.dumps(info, indent=2))


def load(path: Path) -> DFlashNet:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        flags = " --uniform" if path.name.endswith("-uniform") else ""
        raise CheckpointMissing(f"no trained DFlash drafter in {path}; train one with: hvd train drafter{flags} --out {path}")
    info = json.loads((path / CONFIG_FILE).read_text())
    net = DFlashNet(DFlashConfig.from_dict(info["config"]))
    net.load_state_dict({k: v.float() for k, v in load_file(str(path / WEIGHTS_FILE)).items()})
    return net.eval()


class DFlashDrafter:
    name = "dflash"

    def __init__(self, net: DFlashNet, weights: SharedWeights, name: str = "dflash") -> None:
        c = net.c
        if weights.embedding.shape != (c.vocab, c.hidden):
            raise CheckpointMismatch(f"{name}: drafter trained for vocab {c.vocab} x hidden {c.hidden}, the target has "
                                     f"{tuple(weights.embedding.shape)}; train one for it with: hvd train drafter")
        if max(c.target_layers) > weights.num_layers:
            raise CheckpointMismatch(f"drafter reads target layer {max(c.target_layers)}; the target has {weights.num_layers}")
        self.net, self.w, self.name = net.eval(), weights, name
        self.capabilities = Capabilities(needs_hidden_states=c.target_layers)
        self._reset()

    def _reset(self) -> None:
        self._seen = 0  # committed tokens whose features are in the context cache
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer (1, heads, ≤window, d)

    def begin(self, prompt: Sequence[int]) -> None:
        self._reset()

    @torch.inference_mode()
    def propose(self, ctx: DecodeContext) -> Draft:
        if ctx.hidden is None:
            raise RuntimeError("dflash needs the target's hidden states (DecodeContext.hidden)")
        n = len(ctx.tokens) - 1  # the last token is the block's first; features exist for the rest
        self._catch_up(ctx.hidden, n)
        depth = min(self.net.c.block - 1, ctx.max_draft)
        if depth <= 0:
            return Draft.empty()
        first = torch.tensor([ctx.tokens[-1]])  # (1,)
        x = self.net.block_input(first, self.w.embedding)  # (1, K, hidden)
        pos = torch.arange(n, n + self.net.c.block)[None]  # (1, K)
        h = self.net(x, pos, self._kv)[0, 1 : 1 + depth]  # (depth, hidden)
        logits = h @ self.w.head.t()  # (depth, vocab)
        return Draft.chain(logits.argmax(-1).tolist())

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
        pass

    def end(self, output: Sequence[int]) -> None:
        pass


def for_target(target, path: Optional[Path] = None, name: str = "dflash") -> DFlashDrafter:
    """The trained drafter in `path` (default: the packaged checkpoint `name`) over `target`."""
    path = Path(path) if path is not None else CHECKPOINTS / name
    return DFlashDrafter(load(path), target.shared_weights(), name)
