"""The DFlash block drafter network: a few non-causal layers conditioned on target features.

One forward drafts a block of K tokens' worth of predictions. Input: the last committed token
followed by K−1 mask slots, embedded with the target's (frozen, shared) embedding table; the
mask slot is one learned vector. The target's hidden states of `target_layers` at the
committed tokens are concatenated, projected (linear, then RMSNorm) and, in every layer,
turned into extra keys and values the block attends to (queries come only from the block;
attention inside the block is non-causal). Logits come from the target's (frozen, shared) LM
head over the K−1 slots after the first token.

Context: the block sees the projected features of the last `window` committed tokens (a
bounded window keeps per-step cost flat on a CPU; DFlash proper attends to all of them).
Positions are absolute (RoPE), so the context keys of a token never change once computed:
the inference drafter caches them and only projects tokens committed since its last call.

No I/O here: `load`/`save` in `hvd/drafters/dflash.py` read and write the checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class DFlashConfig:
    hidden: int  # the target's hidden size (the block lives in the target's embedding space)
    vocab: int  # the target's vocabulary (checked against the target on load)
    target_layers: tuple[int, ...]  # target hidden-state layers read (0 = embeddings)
    n_layers: int = 2
    n_heads: int = 8
    head_dim: int = 64
    intermediate: int = 1536
    block: int = 16  # K: the last committed token + K−1 predicted slots
    window: int = 256  # committed tokens whose features the block attends to
    rope_theta: float = 10000.0
    eps: float = 1e-5

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_dict(d: dict) -> "DFlashConfig":
        return DFlashConfig(**{**d, "target_layers": tuple(d["target_layers"])})


def spread_layers(n_layers: int, count: int = 4) -> tuple[int, ...]:
    """`count` target layers spread from the first decoder layer to the second-to-last."""
    hi = max(n_layers - 2, 1)
    if count <= 1:
        return (hi,)
    return tuple(sorted({round(1 + i * (hi - 1) / (count - 1)) for i in range(count)}))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


Rotation = tuple[torch.Tensor, torch.Tensor]  # cos, sin (B, 1, T, d/2): RoPE at given positions


def rotation(pos: torch.Tensor, d: int, theta: float, dtype: torch.dtype = torch.float32) -> Rotation:
    """RoPE angles (half-split convention) at positions pos (B, T), computed once per forward in
    float32, then given in `dtype` (the activations', so `rope` casts nothing per call)."""
    inv = theta ** (-torch.arange(0, d, 2, device=pos.device, dtype=torch.float32) / d)  # (d/2,)
    ang = pos.to(torch.float32)[:, None, :, None] * inv  # (B, 1, T, d/2)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope(x: torch.Tensor, rot: Rotation) -> torch.Tensor:
    """x (B, heads, T, d) rotated by `rot` (cast to x's dtype when they differ: under autocast)."""
    cos, sin = rot[0].to(x.dtype), rot[1].to(x.dtype)
    d = x.shape[-1]
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class DFlashLayer(nn.Module):
    def __init__(self, c: DFlashConfig) -> None:
        super().__init__()
        inner = c.n_heads * c.head_dim
        self.c = c
        self.norm_attn = RMSNorm(c.hidden, c.eps)
        self.q = nn.Linear(c.hidden, inner, bias=False)
        self.k = nn.Linear(c.hidden, inner, bias=False)
        self.v = nn.Linear(c.hidden, inner, bias=False)
        self.o = nn.Linear(inner, c.hidden, bias=False)
        self.norm_mlp = RMSNorm(c.hidden, c.eps)
        self.gate = nn.Linear(c.hidden, c.intermediate, bias=False)
        self.up = nn.Linear(c.hidden, c.intermediate, bias=False)
        self.down = nn.Linear(c.intermediate, c.hidden, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.c.n_heads, self.c.head_dim).transpose(1, 2)  # (B, heads, T, d)

    def context_kv(self, ctx: torch.Tensor, rot: Rotation) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, heads, W, d) of projected context features ctx (B, W, hidden)."""
        return rope(self._heads(self.k(ctx)), rot), self._heads(self.v(ctx))

    def forward(self, x: torch.Tensor, rot: Rotation, ctx_k: torch.Tensor, ctx_v: torch.Tensor,
                mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x (B, Q, hidden) rotated by `rot` (its positions); ctx_k/v (B, heads, W, d); mask (B, 1, Q, W+Q) True =
        visible (None: every query sees every key)."""
        h = self.norm_attn(x)
        q = rope(self._heads(self.q(h)), rot)  # (B, heads, Q, d)
        k = torch.cat([ctx_k, rope(self._heads(self.k(h)), rot)], dim=2)  # (B, heads, W+Q, d)
        v = torch.cat([ctx_v, self._heads(self.v(h))], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # non-causal: (B, heads, Q, d)
        x = x + self.o(a.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))
        h = self.norm_mlp(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class DFlashNet(nn.Module):
    """The trainable part; the target's embedding and LM head are passed in, never stored."""

    def __init__(self, c: DFlashConfig) -> None:
        super().__init__()
        self.c = c
        self.fc = nn.Linear(len(c.target_layers) * c.hidden, c.hidden, bias=False)
        self.fc_norm = RMSNorm(c.hidden, c.eps)
        self.mask_emb = nn.Parameter(torch.zeros(c.hidden))
        self.layers = nn.ModuleList(DFlashLayer(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.hidden, c.eps)

    def context(self, feats: torch.Tensor, pos: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values) (B, heads, W, d) of target features feats (B, W, n_target_layers*hidden)."""
        ctx = self.fc_norm(self.fc(feats))  # (B, W, hidden)
        rot = rotation(pos, self.c.head_dim, self.c.rope_theta, ctx.dtype)
        return [layer.context_kv(ctx, rot) for layer in self.layers]

    def block_input(self, first: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """(B, M*K, hidden): per block, its embedded first token then K−1 mask slots; first is
        (B,) for one block per row or (B, M) for M packed blocks."""
        first = first.reshape(first.shape[0], -1)  # (B, M)
        e = F.embedding(first, embedding)[:, :, None]  # (B, M, 1, hidden)
        masks = self.mask_emb.to(e.dtype).expand(*first.shape, self.c.block - 1, -1)  # (B, M, K−1, hidden)
        return torch.cat([e, masks], dim=2).flatten(1, 2)

    def attention_mask(self, ctx_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, Q, W+Q) from context visibility ctx_mask (B, Q, W), Q = M*K: each block also
        sees all of its own K tokens (non-causal) and none of the other blocks'."""
        q, k = ctx_mask.shape[1], self.c.block
        blk = torch.arange(q, device=ctx_mask.device) // k  # (Q,) block of each query
        own = (blk[:, None] == blk[None]).expand(ctx_mask.shape[0], q, q)  # (B, Q, Q)
        return torch.cat([ctx_mask, own], dim=2)[:, None]

    def forward(self, x: torch.Tensor, pos: torch.Tensor, ctx: list[tuple[torch.Tensor, torch.Tensor]],
                ctx_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Final-normed hidden states (B, Q, hidden) of packed blocks x (B, Q, hidden) at pos
        (B, Q); ctx_mask (B, Q, W) says which context tokens each block token sees (None: one
        block that sees the whole context)."""
        mask = None if ctx_mask is None else self.attention_mask(ctx_mask)
        rot = rotation(pos, self.c.head_dim, self.c.rope_theta, x.dtype)
        for layer, (k, v) in zip(self.layers, ctx):
            x = layer(x, rot, k, v, mask)
        return self.norm(x)
