"""`HFTarget`: any Hugging Face causal LM behind the `Target` protocol (batch 1), float32.
Everything transformers-specific (caches, masks, position ids) stays here."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from hvd.targets import f32_attention, f32_linear
from hvd.targets import identity
from hvd.targets.protocol import SharedWeights, TargetConfig, TracksCommits, drafter_dims, kept_rows
from hvd.types import Draft, shared_prefix


def tree_attention_mask(parents: Sequence[int], past: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (1, 1, 1+n, past+1+n) for the root followed by a draft tree.

    Row i may see the whole past, the root and its own ancestors (itself included).
    """
    n = len(parents) + 1  # the root is node 0; draft node j is node j + 1
    allowed = torch.zeros(n, n, dtype=torch.bool)  # (1+n, 1+n)
    allowed[0, 0] = True
    for j, p in enumerate(parents, start=1):
        allowed[j] = allowed[p + 1]  # parent -1 maps to the root row 0
        allowed[j, j] = True
    block = torch.zeros(n, n, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    mask = torch.cat([torch.zeros(n, past, dtype=dtype), block], dim=1)  # (1+n, past+1+n)
    return mask[None, None]


GQA_SDPA = "hvd_gqa_sdpa"  # the attention implementation HFTarget sets on its model


def gqa_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
             attention_mask: Optional[torch.Tensor], dropout: float = 0.0, scaling: Optional[float] = None,
             is_causal: Optional[bool] = None, **kwargs):
    """transformers' sdpa attention, except that grouped key/value heads stay shared inside
    torch's kernel (`enable_gqa`) under a mask too. transformers repeats them (a copy of the
    whole cache, per layer) whenever a mask is given on a CPU, as in every verify of more than
    one token, which makes a verify over a long context cost far more than a plain step. Cases
    it does not cover go to transformers' own."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows = kwargs.pop("hvd_rows", None)  # a verify's rows: hvd's own kernel (f32_attention.py) where it applies
    if rows is not None and f32_attention.applies(module, query, key, value, **kwargs):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return f32_attention.attention(query, key, value, rows, scale), None
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = q_len > 1 and attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    if (query.shape[1] == key.shape[1] or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None
            or (causal and kv_len != q_len) or (attention_mask is not None and attention_mask.shape[1] != 1)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                                           scale=scaling, is_causal=causal, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def _use_gqa_sdpa(model) -> None:
    """Switch `model` to `gqa_sdpa` (where it ran transformers' sdpa), masks made as for sdpa."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register(GQA_SDPA, gqa_sdpa)
    AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)
    model.set_attn_implementation(GQA_SDPA)


def _is_chain(parents: Sequence[int]) -> bool:
    return all(p == i - 1 for i, p in enumerate(parents))


class HFTarget(TracksCommits):
    """A transformers causal LM behind the `Target` protocol (batch 1)."""

    # torch's kernels, attention through `gqa_sdpa`, the cache appended in place (growing_cache.py),
    # and in float32 the linears and a verify's attention by hvd's kernels where they run
    # (`native_kernels`, set per instance); a new name re-keys cost curves and references
    build_id = f"{GQA_SDPA}+growing-kv"

    def __init__(self, model, config: TargetConfig = TargetConfig()) -> None:
        _use_gqa_sdpa(model)
        self._model = model
        self.config = config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.precision = str(self.dtype).replace("torch.", "")
        self.vocab_size: int = model.config.vocab_size
        self.max_context: int = int(getattr(model.config, "max_position_embeddings", 2048))
        self.max_draft_nodes = 1 << 20
        self._cache = None
        self._reset()
        self._head = model.get_output_embeddings().weight  # (vocab, hidden)
        self._native_head = False  # the LM head by hvd's kernel (`_use_native_kernels`)
        self.native_kernels = self._use_native_kernels()
        if self.native_kernels:
            self.build_id = f"{HFTarget.build_id}+f32-kernels"
        self._own_head = getattr(model.config, "final_logit_softcapping", None) is None
        self.eos_ids = identity.eos_ids(model)
        self.fingerprint = identity.target_fingerprint(model, type(self).__name__, self.precision, self.build_id,
                                                       self.device)
        self.num_layers = int(model.config.num_hidden_layers)

    @torch.inference_mode()
    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        ids = [int(t) for t in ids]
        keep = self._reusable(ids)
        if keep:
            self._cache.crop(keep - self._cache.get_seq_length())  # a negative count drops that many tokens
        else:
            from hvd.targets.growing_cache import growing_cache  # transformers specifics stay in this class

            self._cache = growing_cache(self._model.config)
        x = torch.tensor([ids[keep:]], device=self.device)  # (1, L - keep)
        out, logits = self._forward(x, None, None, last_only=True)
        self._len, self._ids = len(ids), ids
        self._hidden.clear()
        for l, h in self._take_hidden(out).items():  # h: (1, L, hidden)
            self._hidden.write(l, 0, h[0])
        return logits[-1].float()

    def _reusable(self, ids: list[int]) -> int:
        """Cached tokens a prefill of `ids` can keep (the last prompt token is always recomputed:
        its logits are the prefill's output)."""
        if not self.config.reuse_prefix or self.config.hidden_layers or self._cache is None:
            return 0
        return shared_prefix(self._ids, ids[:-1])

    @torch.inference_mode()
    def verify(self, root: int, draft: Draft) -> torch.Tensor:
        past = self._len
        self._pending_ids = [int(root), *draft.tokens]
        x = torch.tensor([self._pending_ids], device=self.device)  # (1, 1+n)
        if _is_chain(draft.parents):
            mask = pos = None  # the model's own causal mask and positions
            rows = f32_attention.Rows.chain(past, len(draft)) if self.native_kernels else None
        else:
            mask = tree_attention_mask(draft.parents, past, self.dtype).to(self.device)
            depth = torch.tensor([0, *draft.depths()], device=self.device)
            pos = (past + depth)[None]  # (1, 1+n)
            rows = f32_attention.Rows.tree(past, draft.parents) if self.native_kernels else None
        out, logits = self._forward(x, mask, pos, rows=rows)
        self._pending_hidden = {l: h[0] for l, h in self._take_hidden(out).items()}  # layer -> (1+n, hidden)
        return logits.float()

    @torch.inference_mode()
    def commit(self, path: Sequence[int]) -> None:
        """Keep the root and draft nodes `path` (each the parent of the next) in the cache."""
        past, keep = self._len, kept_rows(path)
        if keep != list(range(len(keep))):  # a branch: move the kept rows down in place, no reallocation
            idx = torch.tensor([past + k for k in keep], device=self.device)
            for layer in self._cache.layers:
                layer.keys[:, :, past : past + len(keep)] = layer.keys[:, :, idx]  # gather copies first
                layer.values[:, :, past : past + len(keep)] = layer.values[:, :, idx]
        drop = self._cache.get_seq_length() - past - len(keep)
        if drop:
            self._cache.crop(-drop)  # transformers 5: a negative count drops that many tokens
        self._record(past, keep)

    def shared_weights(self) -> SharedWeights:
        cfg = self._model.config
        embedding = self._model.get_input_embeddings().weight  # (vocab, hidden)
        return SharedWeights(embedding.detach(), self._head.detach(), int(cfg.num_hidden_layers),
                             float(getattr(cfg, "rms_norm_eps", 1e-6)), *drafter_dims(cfg))

    @torch.inference_mode()
    def teacher_forced(self, ids: Sequence[int], layers: Sequence[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """One forward over `ids` outside the decode cache (training data): layer -> hidden
        states (L, hidden), and the target's argmax after each prefix (L,)."""
        x = torch.tensor([list(ids)], device=self.device)  # (1, L)
        out = self._model.base_model(input_ids=x, use_cache=False, output_hidden_states=True)
        h = out.last_hidden_state[0]  # (L, hidden)
        labels = torch.cat([self._project(h[i : i + 256]).argmax(-1)
                            for i in range(0, h.shape[0], 256)])  # (L,), in chunks: (256, vocab) at a time
        return {l: out.hidden_states[l][0] for l in layers}, labels

    def skip_step(self, token: int, past: int, offset: int, layers: Sequence[int]) -> int:
        """`SkipsLayers`: the token through decoder `layers` only, its keys and values appended to
        those layers' caches (`skip_done` crops them back)."""
        if self._cache is None:
            raise RuntimeError("self-draft needs the target's cache to hold every committed token but the last")
        base = self._model.base_model
        x = base.embed_tokens(torch.tensor([[token]], device=self.device))  # (1, 1, hidden)
        pos_ids = torch.tensor([[past + offset]], device=self.device)  # (1, 1)
        rope = base.rotary_emb(x, position_ids=pos_ids)
        for i in layers:  # one query token: no mask needed
            x = base.layers[i](x, attention_mask=None, position_ids=pos_ids, past_key_values=self._cache,
                               use_cache=True, position_embeddings=rope)
            x = x[0] if isinstance(x, tuple) else x  # older decoder layers return (hidden, ...)
        return int(self._project(base.norm(x)[0]).argmax())

    def skip_done(self, past: int, layers: Sequence[int]) -> None:
        if self._cache is None:
            return
        for i in layers:  # back to the committed length
            layer = self._cache.layers[i]
            if layer.get_seq_length() > past:
                layer.crop(past - layer.get_seq_length())

    def _forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], pos: Optional[torch.Tensor], last_only: bool = False,
                 rows: Optional[f32_attention.Rows] = None):
        """(model output, logits (T or 1, vocab)) for input ids x (1, T); `rows`: the keys each
        row sees, for hvd's attention kernel (`gqa_sdpa`)."""
        kwargs = dict(input_ids=x, attention_mask=mask, position_ids=pos, past_key_values=self._cache,
                      use_cache=True, output_hidden_states=bool(self.config.hidden_layers))
        if rows is not None:
            kwargs["hvd_rows"] = rows
        if not self._own_head:
            out = self._model(**kwargs)
            return out, out.logits[0, -1:] if last_only else out.logits[0]
        out = self._model.base_model(**kwargs)
        h = out.last_hidden_state[0, -1:] if last_only else out.last_hidden_state[0]  # (T, hidden)
        return out, self._project(h)

    def _use_native_kernels(self) -> bool:
        """float32 on a CPU where hvd's kernels run: the model's linears and the LM head by
        f32_linear.py, and a verify's attention by f32_attention.py (each batch-invariant, and
        faster for a few rows). Whether they do."""
        if self.dtype != torch.float32 or self.device.type != "cpu" or not f32_linear.available(torch.get_num_threads()):
            return False
        self._native_head = f32_linear.applies(self._head)
        f32_linear.use_native_linears(self._model)
        return True

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        """LM head: (T, hidden) -> (T, vocab); by hvd's float32 kernel where it runs (`_native_head`).

        On CPU, `W @ h.T` with h row-major (so h.T is a column-major view) takes MKL's fast path
        for a few columns, well ahead of `linear(h, W)`; one row is computed as two, since a
        single column takes the slower matrix-vector path. From 12 rows on `linear` is as fast
        or faster, so it takes over there."""
        if self._native_head:
            return f32_linear.linear(h, self._head)
        t = h.shape[0]
        if t >= 12:
            return torch.nn.functional.linear(h, self._head)
        if t == 1:
            h = h.repeat(2, 1)  # (2, hidden), contiguous: an expanded (stride 0) view is far slower
        return (self._head @ h.t()).t()[:t]

    def _take_hidden(self, out) -> dict[int, torch.Tensor]:
        if not self.config.hidden_layers:
            return {}
        return {l: out.hidden_states[l] for l in self.config.hidden_layers}  # layer -> (1, T, hidden)
