"""A lean Llama-family target: static KV cache, exact in bf16 because every forward is batch-invariant.

Why: in bf16 on a CPU with bf16 units a forward over many draft tokens costs little more than
one, but a verify forward and a one-token decode step round differently (other kernels for
other shapes), so a speculative method's output drifts from plain decoding. Here the logits of a
token are bitwise the same however its forward is grouped (one token, a chain, a tree, a
prefill chunk), so every method gives `ar`'s output token for token:

- linear layers run on at most `ROWS` rows at a time (the bf16 GEMM here gives each row the
  same bits for 1..32 rows; more rows switch kernels);
- attention works in absolute key blocks of `BLOCK` positions: scores and the softmax max are
  per element; every block's sum and value product are taken over exactly `BLOCK` keys in
  the token's own sequence order (blocks that may hold draft nodes are gathered per query, so
  a tree node sees its ancestors where a plain decode would have them, masked keys weigh
  exactly 0), and the block partials are added in block order (a sequential cumsum), so
  trailing all-masked blocks add exact zeros;
- a prefill is the one forward not held to this (the fastest kernels, in chunks at fixed
  multiples of `PREFILL_CHUNK`): every method starts from the same prefill, and a prefill
  that keeps a cached prefix recomputes whole chunks, so its rounding is shared too.

These properties are kernel facts, not guarantees of the library: `hvd.targets.check`
tests them on this machine with the model's shapes before a target is built
(`Engine.load(dtype="bfloat16")`), and the tests compare logits bitwise.

Cache layout: slots = positions for committed tokens; a verify writes the root and the draft
nodes at slots past..past+n, `commit` moves the accepted path down to past.. (rollback is
moving the length back). Hidden state layer l is the input of decoder layer l (0 =
embeddings), as in transformers' `hidden_states` for l < num_layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch.nn import functional as F

from hvd.targets.protocol import SharedWeights, TargetConfig
from hvd.targets.family import llama_layers
from hvd.targets.shape import LlamaShape, UnsupportedModel, rope_scaling, rope_tables
from hvd.targets.slot_cache import SlotCacheTarget
from hvd.types import shared_prefix

ROWS = 32  # rows per linear call
BLOCK = 64  # attention key block (positions)
PREFILL_CHUNK = 256  # prefill forwards cover [256i, 256(i+1)): fixed boundaries, fixed rounding


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (T, in) @ w.T in calls of at most ROWS rows: (T, out)."""
    if x.shape[0] <= ROWS:
        return F.linear(x, w)
    return torch.cat([F.linear(x[i : i + ROWS], w) for i in range(0, x.shape[0], ROWS)])


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (T, heads, d) rotated by cos/sin (T, d)."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rot = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos[:, None] + rot * sin[:, None]).to(x.dtype)


def key_slots(past: int, pos: torch.Tensor, rows: Sequence[Sequence[int]], start: int, width: int) -> torch.Tensor:
    """(T, width) cache slot of each query's logical key position start..start+width-1, -1 where
    the query does not see it. pos (T,): query positions; rows[i]: the slots of query i's path
    from the root (slot `past`) to itself, in order."""
    t = torch.arange(start, start + width)  # (width,)
    out = torch.where(t[None] < past, t[None], torch.full((1, width), -1)).repeat(len(rows), 1)  # (T, width)
    for i, path in enumerate(rows):
        lo = past - start
        out[i, lo : lo + len(path)] = torch.tensor(path)
    return out


def attend(q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, past: int, slots: torch.Tensor,
           scale: float) -> torch.Tensor:
    """Attention of T queries q (T, heads, d) over the cache kc/vc (kv_heads, C, d).

    Blocks wholly before `past` are read in place (every query sees all of them); the rest are
    gathered per query through `slots` (T, width), a multiple of BLOCK wide. Returns (T, heads*d)."""
    T, H, d = q.shape
    kvh = kc.shape[0]
    g = H // kvh
    nfull = past // BLOCK
    qg = q.permute(1, 0, 2).reshape(kvh, g * T, d)  # (kvh, g*T, d): head h reads kv head h // g
    s_full = None
    if nfull:
        s_full = (qg @ kc[:, : nfull * BLOCK].transpose(1, 2)).float() * scale  # (kvh, g*T, nfull*B)
    width = slots.shape[1]
    ntail = width // BLOCK
    idx = slots.clamp(min=0)  # (T, width)
    kt = kc[:, idx]  # (kvh, T, width, d)
    vt = vc[:, idx]
    qb = q.view(T, kvh, g, d).permute(1, 0, 2, 3).reshape(kvh * T, g, d)  # (kvh*T, g, d)
    s_tail = (qb @ kt.reshape(kvh * T, width, d).transpose(1, 2)).float() * scale  # (kvh*T, g, width)
    s_tail = s_tail.view(kvh, T, g, width).permute(0, 2, 1, 3)  # (kvh, g, T, width)
    s_tail = s_tail.masked_fill((slots < 0)[None, None], float("-inf"))
    m = s_tail.amax(-1)  # (kvh, g, T)
    if s_full is not None:
        s_full = s_full.view(kvh, g, T, nfull * BLOCK)
        m = torch.maximum(m, s_full.amax(-1))
    e_tail = torch.exp(s_tail - m[..., None]).contiguous()  # (kvh, g, T, width)
    sums = [e_tail.view(kvh, g, T, ntail, BLOCK).sum(-1)]  # (kvh, g, T, ntail)
    eb = e_tail.to(q.dtype).view(kvh, g, T, ntail, BLOCK).permute(0, 2, 3, 1, 4).reshape(kvh * T * ntail, g, BLOCK)
    vb = vt.reshape(kvh * T * ntail, BLOCK, d)
    o_tail = (eb @ vb).view(kvh, T, ntail, g, d).permute(0, 3, 1, 2, 4).float()  # (kvh, g, T, ntail, d)
    outs = [o_tail]
    if s_full is not None:
        e_full = torch.exp(s_full - m[..., None]).contiguous()  # (kvh, g, T, nfull*B)
        sums.insert(0, e_full.view(kvh, g, T, nfull, BLOCK).sum(-1))
        ef = e_full.to(q.dtype).view(kvh, g * T, nfull, BLOCK).permute(0, 2, 1, 3)  # (kvh, nfull, g*T, B)
        o_full = ef @ vc[:, : nfull * BLOCK].view(kvh, nfull, BLOCK, d)  # (kvh, nfull, g*T, d)
        outs.insert(0, o_full.view(kvh, nfull, g, T, d).permute(0, 2, 3, 1, 4).float())  # (kvh, g, T, nfull, d)
    total = torch.cat(sums, -1).cumsum(-1)[..., -1]  # (kvh, g, T): block partials added in order
    o = torch.cat(outs, 3).cumsum(3)[:, :, :, -1] / total[..., None]  # (kvh, g, T, d)
    return o.permute(2, 0, 1, 3).reshape(T, H * d).to(q.dtype)


@dataclass(frozen=True)
class Kernels:
    """How one forward computes its products: `linear(x (T, in), w (out, in))` and
    `attend(q (T, heads, d), k/v cache (kv_heads, C, d))` -> (T, heads*d)."""

    linear: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def dense_kernels(past: int, pos: torch.Tensor) -> Kernels:
    """A prefill chunk: one causal chain through the fastest kernels (not batch-invariant)."""
    T = pos.shape[0]
    causal = torch.arange(past + T)[None] <= pos[:, None]  # (T, past+T)

    def attend_dense(q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
        o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], kc[None, :, : past + T], vc[None, :, : past + T],
                                           attn_mask=causal, enable_gqa=True)  # (1, heads, T, d)
        return o[0].transpose(0, 1).reshape(T, -1)

    return Kernels(F.linear, attend_dense)


def invariant_kernels(past: int, pos: torch.Tensor, paths: Sequence[Sequence[int]], scale: float) -> Kernels:
    """Decode and verify: row-capped linears and 64-key-block attention along each query's path,
    so every token's numbers do not depend on what else is in the batch."""
    start = (past // BLOCK) * BLOCK
    width = -(-(int(pos.max()) + 1 - start) // BLOCK) * BLOCK
    slots = key_slots(past, pos, paths, start, width)  # (T, width)
    return Kernels(linear, lambda q, kc, vc: attend(q, kc, vc, past, slots, scale))


class LlamaTarget(SlotCacheTarget):
    """The `Target` protocol over a Llama-family transformers model's weights (batch 1)."""

    def __init__(self, model, config: TargetConfig = TargetConfig()) -> None:
        self.config = config
        self.shape = LlamaShape.of(model.config)
        if rope_scaling(model.config) != "default":
            raise UnsupportedModel(f"rope scaling {rope_scaling(model.config)!r} is not supported by the lean target")
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.precision = str(self.dtype).replace("torch.", "")
        self.vocab_size = self.shape.vocab
        self.max_context = self.shape.max_context
        self.max_draft_nodes = ROWS - 1  # root + 31 nodes: one pass over the weights; 33 rows cost two
        self._layers = llama_layers(model, "lean")
        self._embed = model.get_input_embeddings().weight  # (vocab, hidden)
        self._norm = model.model.norm.weight
        self._head = model.get_output_embeddings().weight  # (vocab, hidden)
        self._scale = self.shape.head_dim ** -0.5
        self._k: Optional[torch.Tensor] = None  # (layers, kv_heads, capacity, d)
        self._v: Optional[torch.Tensor] = None
        self._cos = self._sin = torch.empty(0)
        self._reset()
        self._identify(model)

    # ---- the forward -------------------------------------------------------------------
    def _ensure(self, n: int) -> None:
        """Room for n slots in the KV cache and the rope tables."""
        s = self.shape
        cap = 0 if self._k is None else self._k.shape[2]
        if n > cap:
            new = max(2 * cap, -(-max(n, 256) // BLOCK) * BLOCK)
            k = torch.zeros(s.layers, s.kv_heads, new, s.head_dim, dtype=self.dtype, device=self.device)
            v = torch.zeros_like(k)
            if self._k is not None:
                k[:, :, :cap], v[:, :, :cap] = self._k, self._v
            self._k, self._v = k, v
        if n + BLOCK > self._cos.shape[0]:
            self._cos, self._sin = rope_tables(s, max(2 * self._cos.shape[0], n + 4 * BLOCK))

    def _forward(self, ids: Sequence[int], past: int, pos: torch.Tensor, paths: Optional[Sequence[Sequence[int]]],
                 layers: Optional[Sequence[int]] = None, keep: Sequence[int] = ()) -> tuple[torch.Tensor, dict]:
        """Final-normed hidden states (T, hidden) of tokens `ids` written at slots past..past+T-1
        at positions pos (T,); paths[i]: query i's slots from the root to itself, or None for a
        prefill chunk (a causal chain computed by the fastest kernels, not batch-invariant).
        `layers`: decoder layers to run (None: all); `keep`: layers whose input hidden states
        to return."""
        s = self.shape
        T = len(ids)
        self._ensure(past + T)
        x = F.embedding(torch.tensor(ids, device=self.device), self._embed)  # (T, hidden)
        cos, sin = self._cos[pos], self._sin[pos]  # (T, d)
        kern = dense_kernels(past, pos) if paths is None else invariant_kernels(past, pos, paths, self._scale)
        hidden = {}
        for i in range(s.layers) if layers is None else layers:
            if i in keep:
                hidden[i] = x
            w = self._layers[i]
            h = rms_norm(x, w.ln_attn, s.eps)
            qkv = kern.linear(h, w.qkv).view(T, s.heads + 2 * s.kv_heads, s.head_dim)
            q = apply_rope(qkv[:, : s.heads], cos, sin)  # (T, heads, d)
            k = apply_rope(qkv[:, s.heads : s.heads + s.kv_heads], cos, sin)  # (T, kv_heads, d)
            self._k[i, :, past : past + T] = k.transpose(0, 1)
            self._v[i, :, past : past + T] = qkv[:, s.heads + s.kv_heads :].transpose(0, 1)
            x = x + kern.linear(kern.attend(q, self._k[i], self._v[i]), w.o)
            h = rms_norm(x, w.ln_mlp, s.eps)
            gate, up = kern.linear(h, w.gate_up).chunk(2, dim=-1)
            x = x + kern.linear(F.silu(gate) * up, w.down)
        if s.layers in keep:
            hidden[s.layers] = x
        return rms_norm(x, self._norm, s.eps), hidden

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return linear(h, self._head).float()  # (T, vocab)

    # ---- the Target protocol (hvd/targets/slot_cache.py) ------------------------------
    @property
    def prefill_chunk(self) -> int:
        return PREFILL_CHUNK  # read at call time: tests shrink it

    def _reusable(self, ids: list[int]) -> int:
        """Committed tokens a prefill of `ids` keeps: the shared prefix (the last prompt token is
        always recomputed) rounded down to a whole number of prefill chunks, so the tokens
        computed again fall in the same chunks, and round the same, as in a fresh prefill."""
        if not self.config.reuse_prefix or self._k is None:
            return 0
        return (shared_prefix(self._ids[: self._len], ids[:-1]) // PREFILL_CHUNK) * PREFILL_CHUNK

    def _move_slots(self, src: list[int], past: int) -> None:
        idx = torch.tensor(src)
        self._k[:, :, past : past + len(src)] = self._k[:, :, idx]  # gather copies first
        self._v[:, :, past : past + len(src)] = self._v[:, :, idx]

    def shared_weights(self) -> SharedWeights:
        return SharedWeights(self._embed.detach(), self._head.detach(), self.shape.layers, self.shape.eps, *self._dims)

    @torch.inference_mode()
    def teacher_forced(self, ids: Sequence[int], layers: Sequence[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Layer -> hidden states (L, hidden) and the argmax after each prefix (L,), from one
        prefill-style forward (it reuses the decode cache's memory: the cache is left empty)."""
        ids = [int(t) for t in ids]
        h, hid = self._forward(ids, 0, torch.arange(len(ids)), None, keep=tuple(layers))
        labels = torch.cat([self._logits(h[i : i + 256]).argmax(-1) for i in range(0, len(ids), 256)])  # (L,)
        self._ids, self._len = [], 0
        return {l: hid[l] for l in layers}, labels
