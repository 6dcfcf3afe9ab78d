"""The exact target: a Llama-family model in int8 whose every forward is batch-invariant by
construction, on any x86-64 CPU with AVX2 (`--dtype int8`; what `--dtype auto` picks there).

Why: speculative decoding is lossless only if a verify forward gives each token the logits a
one-token decode step would. Vendor float GEMMs do not promise that (other kernels for other
row counts), so the bf16 target (hvd/targets/lean.py) is exact only where the machine's kernels happen
to be. Here it follows from how the numbers are computed (hvd/targets/kernels_int8.c, kernels_int8_layer.c):

- weights are int8 with one scale per output channel, activations are quantized to int8 per
  token (scale = max |x| / 127) at every linear's input, and the products are summed in int32:
  exact in any order, so rows, tiles, SIMD width and threads cannot change a bit;
- RMS norm, SiLU, rotary embedding and attention are float32 loops written in one order per
  token (see kernels_int8_layer.c; exp in kernels_common.h), our own exp included, compiled without floating-point contraction;
- the LM head is an int8 linear like the others; logits come out float32.

This is a model of its own (W8A8 of the checkpoint's weights, like llama.cpp quantizing
activations to 8 bits for its dot products), so it is a named dtype and every method is
lossless relative to *this* target's `ar`. Reading int8 weights costs a quarter of float32.

Cache layout: slot = position for committed tokens; a verify writes the root and draft nodes
at slots past..past+n; `commit` moves the accepted path down (rollback moves the length back).
Keys are stored in groups of 8 slots, transposed (kernels_int8_layer.c), values row per slot.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.nn import functional as F

from hvd.targets.exact_kv import KVCache, Rows, pack
from hvd.targets.family import Architecture, LayerExtras, decoder_layers, layer_extras, norm_weight, rope_tables
from hvd.targets.native import LayerSpec, integer_path, library, ptr, weight_group
from hvd.targets.protocol import SharedWeights, TargetConfig
from hvd.targets.shape import LlamaShape, UnsupportedModel
from hvd.targets.slot_cache import SlotCacheTarget
from hvd.types import Draft, shared_prefix

PREFILL_CHUNK = 256  # rows per prefill forward (bounds scratch memory; rounding does not depend on it)


@dataclass(frozen=True)
class QuantLinear:
    """An int8 weight (out, in) with one float32 scale per output channel."""

    q: torch.Tensor  # int8 in groups of G output rows, interleaved: (ceil(out/G), in/16, G, 16)
    scale: torch.Tensor  # (out,) float32

    @staticmethod
    def of(w: torch.Tensor, group: int = 4) -> "QuantLinear":
        """Quantized per output channel; `group` (4 or 16): the kernels' layout (native.weight_group)."""
        w = w.detach().float()
        amax = w.abs().amax(dim=1)  # (out,)
        scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
        n, k = q.shape
        q = F.pad(q, (0, 0, 0, -n % group)).view(-1, group, k // 16, 16).transpose(1, 2).contiguous()
        return QuantLinear(q, scale.contiguous())

    @property
    def group(self) -> int:
        return self.q.shape[2]

    def dense(self) -> torch.Tensor:
        """(out, in) int8, row-major."""
        return self.q.transpose(1, 2).reshape(-1, self.q.shape[1] * 16)[: self.out_features]

    @property
    def out_features(self) -> int:
        return self.scale.shape[0]


@dataclass(frozen=True)
class _Layer:
    ln_attn: torch.Tensor  # (hidden,) float32
    qkv: QuantLinear  # q, k, v projections stacked
    o: QuantLinear
    ln_mlp: torch.Tensor
    gate_up: QuantLinear  # gate and up stacked
    down: QuantLinear
    extras: LayerExtras  # the family's additions (biases, q/k norms, output norms)
    kind: str  # the layer's rope table
    spec: LayerSpec  # all of the above as the kernel reads it (addresses into the tensors here)


def _layers_of(model, arch: Architecture, s: LlamaShape, inter: int, group: int) -> list[_Layer]:
    out = []
    for i, (w, layer) in enumerate(zip(decoder_layers(model, arch), model.model.layers)):
        ex = layer_extras(layer, arch)
        qkv, o, gu, down = (QuantLinear.of(m, group) for m in (w.qkv, w.o, w.gate_up, w.down))
        opt = lambda t: 0 if t is None else ptr(t)  # noqa: E731
        spec = LayerSpec(s.hidden, s.heads, s.kv_heads, s.head_dim, inter, arch.activation, arch.windows[i], group,
                         s.eps, arch.attn_scale, ptr(w.ln_attn), ptr(w.ln_mlp), opt(ex.post_attn), opt(ex.post_mlp),
                         opt(ex.q_norm), opt(ex.k_norm), opt(ex.qkv_bias), ptr(qkv.q), ptr(o.q), ptr(gu.q),
                         ptr(down.q), ptr(qkv.scale), ptr(o.scale), ptr(gu.scale), ptr(down.scale))
        out.append(_Layer(w.ln_attn, qkv, o, w.ln_mlp, gu, down, ex, arch.layer_kinds[i], spec))
    return out


def _check_shape(s: LlamaShape, intermediate: int) -> None:
    if s.head_dim % 8 or s.head_dim > 256:
        raise UnsupportedModel(f"head_dim {s.head_dim} (the exact kernels take multiples of 8 up to 256)")
    if s.heads % s.kv_heads or s.heads // s.kv_heads > 8:
        raise UnsupportedModel(f"{s.heads} heads over {s.kv_heads} kv heads (at most 8 per kv head)")
    for name, n in (("hidden size", s.hidden), ("intermediate size", intermediate), ("attention width", s.heads * s.head_dim)):
        if n % 16:
            raise UnsupportedModel(f"{name} {n} is not a multiple of 16")


class ExactLlamaTarget(SlotCacheTarget):
    """The `Target` protocol over a transformers model of a family in hvd/targets/family.py
    (Llama, Mistral, Qwen2/2.5, Qwen3, Gemma 3), int8, batch-invariant (batch 1)."""

    precision = "int8"

    def __init__(self, model, config: TargetConfig = TargetConfig(), max_draft_nodes: int = 63,
                 threads: Optional[int] = None) -> None:
        self._model = model  # its rotary tables are made from it as the context grows
        self.config = config
        self.shape = s = LlamaShape.of(model.config)
        self.arch = arch = Architecture.of(model)
        _check_shape(s, int(model.config.intermediate_size))
        self.lib = library()
        self.device = torch.device("cpu")
        self.dtype = torch.float32  # activations and the KV cache
        self.vocab_size = s.vocab
        self.max_context = s.max_context
        self.max_draft_nodes = max_draft_nodes
        self._inter = int(model.config.intermediate_size)
        self._group = group = weight_group(self.lib)
        self._layers = _layers_of(model, arch, s, self._inter, group)
        self._embed = model.get_input_embeddings().weight.detach().float()  # (vocab, hidden), as stored
        self._embed_in = self._embed * arch.embed_scale if arch.embed_scale != 1.0 else self._embed
        self._norm = norm_weight(model.model.norm, arch)
        self._head = QuantLinear.of(model.get_output_embeddings().weight, group)
        self._scratch_bufs: dict[int, torch.Tensor] = {}
        self._kv = KVCache(s.layers, s.kv_heads, s.head_dim)  # this target's own sequence
        self._rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer kind -> (cos, sin)
        self._rope_len = 0
        self._reset()
        self.set_threads(threads or torch.get_num_threads())
        self._identify(model)

    @property
    def build_id(self) -> str:
        """The compiled kernels (source, flags, compiler) and the integer path they run."""
        vnni = self._group == 16 and integer_path(self.lib) == "avx512-vnni"
        return f"{Path(self.lib._name).stem}-{'avx512-vnni' if vnni else 'avx2'}"

    def set_threads(self, n: int) -> None:
        self.lib.hvd_set_threads(int(n))

    # ---- the forward -------------------------------------------------------------------
    def new_cache(self) -> KVCache:
        """An empty KV cache for another sequence (`forward_rows`)."""
        s = self.shape
        return KVCache(s.layers, s.kv_heads, s.head_dim)

    def _ensure_rope(self, n: int) -> None:
        """Rotary tables for positions below n (with room to spare)."""
        if n + 64 > self._rope_len:
            self._rope_len = min(max(2 * self._rope_len, n + 256), max(self.max_context, n + 64))
            self._rope = rope_tables(self._model, self.arch, self._rope_len)

    def _linear(self, q: torch.Tensor, qs: torch.Tensor, w: QuantLinear, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(T, out) = dequantized x @ w.T; with `out`, added to it in place."""
        T, K = q.shape
        y = out if out is not None else torch.empty(T, w.out_features)
        self.lib.hvd_linear(ptr(q), ptr(qs), T, K, ptr(w.q), ptr(w.scale), w.out_features, ptr(y), int(out is not None),
                            w.group)
        return y

    def _scratch(self, T: int) -> torch.Tensor:
        """A layer's working memory for T rows (kept per row count: no allocation per step)."""
        buf = self._scratch_bufs.get(T)
        if buf is None:
            s = self.shape
            n = self.lib.hvd_layer_scratch(T, s.hidden, s.heads, s.kv_heads, s.head_dim, self._inter)
            buf = self._scratch_bufs[T] = torch.empty(n + 32, dtype=torch.uint8)
            off = (-buf.data_ptr()) % 32
            buf = self._scratch_bufs[T] = buf[off:]
        return buf

    def _forward(self, ids: Sequence[int], past: int, pos: torch.Tensor, paths: Optional[Sequence[Sequence[int]]],
                 layers: Optional[Sequence[int]] = None, keep: Sequence[int] = ()) -> tuple[torch.Tensor, dict]:
        """Final-normed hidden states (T, hidden) of tokens `ids` of this target's own sequence
        written at slots past..past+T-1 at positions pos (T,); paths[i]: query i's slots from the
        root to itself (None: a causal chain, slot = position). `layers`: decoder layers to run
        (None: all); `keep`: layers whose input hidden states to return."""
        (out,), hidden = self.forward_rows([Rows(self._kv, ids, past, pos, paths)], layers, keep)
        return out, hidden

    @torch.inference_mode()
    def forward_rows(self, parts: Sequence[Rows], layers: Optional[Sequence[int]] = None,
                     keep: Sequence[int] = ()) -> tuple[list[torch.Tensor], dict]:
        """One forward over the rows of several sequences, each part over its own cache: per part
        the final-normed hidden states (T_part, hidden), bitwise what the part computes alone
        (every op is batch-invariant); `keep`'s hidden states (all rows, in part order)."""
        s, lib = self.shape, self.lib
        pk = pack(parts)
        T = pk.ids.shape[0]
        self._ensure_rope(int(pk.pos.max()) + 1 if T else 0)
        hidden = {}
        x = F.embedding(pk.ids, self._embed_in).contiguous()  # (T, hidden) float32
        scratch = self._scratch(T)
        nseq = len(pk.caches)
        kp, vp, caps = pk.cache_pointers()
        for i in range(s.layers) if layers is None else layers:
            if i in keep:
                hidden[i] = x.clone()
            w = self._layers[i]
            cos, sin = self._rope[w.kind]
            lib.hvd_layer_batch(ctypes.byref(w.spec), ptr(x), T, ptr(pk.pos), ptr(cos), ptr(sin), ptr(pk.slots), nseq,
                                ptr(pk.rows), kp[i].ctypes.data, vp[i].ctypes.data, caps.ctypes.data, ptr(pk.base),
                                ptr(pk.path), ptr(pk.off), ptr(scratch))
        if s.layers in keep:
            hidden[s.layers] = x.clone()
        out = torch.empty_like(x)
        lib.hvd_rmsnorm(ptr(x), T, s.hidden, ptr(self._norm), s.eps, ptr(out))
        bounds = pk.rows.tolist()
        return [out[a:b] for a, b in zip(bounds, bounds[1:])], hidden

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(T, vocab) float32 logits of final-normed hidden states (T, hidden), as `verify` gives them."""
        return self._logits(h)

    def _head_input(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-normed hidden states (T, hidden) quantized for the LM head: int8 values (as
        int16) and per-row scales."""
        h = h.contiguous()
        T, K = h.shape
        q, qs = torch.empty(T, K, dtype=torch.int16), torch.empty(T)
        self.lib.hvd_quantize(ptr(h), T, K, ptr(q), ptr(qs))
        return q, qs

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """(T, vocab) float32 logits of final-normed hidden states (T, hidden)."""
        return self._linear(*self._head_input(h), self._head)

    @torch.inference_mode()
    def verify_argmax(self, root: int, draft: Draft) -> list[int]:
        """(1 + n,) each row's argmax of `verify`'s logits, the first index of its maximum (as
        `verify.argmax_rows` reads them), from the LM head's outputs without writing them out:
        the same forward, then per row a running maximum over the same floats, so a greedy verify
        never writes and re-reads a row of logits (vocab float32s: 1 MB a row for Gemma 3)."""
        return self.argmax(self._verify_forward(root, draft))

    def argmax(self, h: torch.Tensor) -> list[int]:
        """Each row's argmax of `logits(h)`, the first index of its maximum, without the logits."""
        q, qs = self._head_input(h)
        arg = torch.empty(q.shape[0], dtype=torch.int32)
        w = self._head
        self.lib.hvd_linear_argmax(ptr(q), ptr(qs), q.shape[0], q.shape[1], ptr(w.q), ptr(w.scale), w.out_features,
                                   w.group, ptr(arg))
        return arg.tolist()

    # ---- the Target protocol (hvd/targets/slot_cache.py) ------------------------------
    prefill_chunk = PREFILL_CHUNK

    def _reusable(self, ids: list[int]) -> int:
        """Committed tokens a prefill of `ids` keeps: the shared prefix (the last prompt token is
        always recomputed). Any length: a token's numbers do not depend on how it was grouped."""
        if not self.config.reuse_prefix or self._kv.k is None or self.config.hidden_layers:
            return 0
        return shared_prefix(self._ids[: self._len], ids[:-1])

    def _move_slots(self, src: list[int], past: int) -> None:
        self.move_slots(self._kv, src, past)

    def move_slots(self, cache: KVCache, src: list[int], past: int) -> None:
        """Keys and values of `cache`'s slots `src` to slots past, past+1, ... (a branch kept)."""
        s = self.shape
        src32 = torch.tensor(src, dtype=torch.int32)
        dst = torch.arange(past, past + len(src), dtype=torch.int32)
        self.lib.hvd_move_slots(ptr(cache.k), ptr(cache.v), s.layers, s.kv_heads, s.head_dim, cache.capacity,
                                ptr(src32), ptr(dst), len(src))

    def shared_weights(self) -> SharedWeights:
        head = self._model.get_output_embeddings().weight.detach()
        return SharedWeights(self._embed, head, self.shape.layers, self.shape.eps, *self._dims)

    @torch.inference_mode()
    def teacher_forced(self, ids: Sequence[int], layers: Sequence[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Layer -> hidden states (L, hidden) and the argmax after each prefix (L,), from
        prefill-style forwards (they reuse the decode cache's memory: the cache is left empty)."""
        ids = [int(t) for t in ids]
        labels, hid_all = [], {l: [] for l in layers}
        for i in range(0, len(ids), PREFILL_CHUNK):
            j = min(i + PREFILL_CHUNK, len(ids))
            h, hid = self._forward(ids[i:j], i, torch.arange(i, j), None, keep=tuple(layers))
            labels.append(self._logits(h).argmax(-1))
            for l in layers:
                hid_all[l].append(hid[l])
        self._ids, self._len = [], 0
        return {l: torch.cat(v) for l, v in hid_all.items()}, torch.cat(labels)
