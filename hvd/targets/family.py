"""The decoder-only families the exact target runs, read from a transformers model: what differs
between Llama, Mistral, Qwen2/2.5, Qwen3 and Gemma 3, as data the kernels take per layer.

| family   | differs from Llama by                                                               |
|----------|-------------------------------------------------------------------------------------|
| llama    | (Llama 3.x: rope scaling — the tables come from the model's own rotary module)      |
| mistral  | a sliding window on every layer where the config sets one                           |
| qwen2    | q/k/v biases; sliding windows only on layers its `layer_types` mark                  |
| qwen3    | RMS norms on q and k per head, before the rotation                                  |
| gemma3   | norms scale by 1 + w; embeddings times sqrt(hidden); a norm after attention and     |
|          | after the MLP too; GELU (tanh); q/k norms; query scale from query_pre_attn_scalar;  |
|          | sliding-window layers with their own rope base                                      |

Anything else (another architecture, soft-capping, partial rotary, rope that changes with the
sequence length) raises `UnsupportedModel` with the reason, and the model runs through transformers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from hvd.targets.shape import UnsupportedModel

FAMILIES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3",
            "gemma3": "gemma3"}
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # rope types whose tables do not depend on the sequence length
SILU, GELU_TANH = 0, 1
ACTIVATIONS = {"silu": SILU, "gelu_pytorch_tanh": GELU_TANH, "gelu_tanh": GELU_TANH}


@dataclass(frozen=True)
class Architecture:
    """Per-model choices of the forward (the kernels' switches)."""

    family: str
    activation: int  # SILU or GELU_TANH
    norm_offset: float  # norms scale by (offset + w): 1 for Gemma, 0 otherwise
    embed_scale: float  # embeddings are multiplied by this (sqrt(hidden) for Gemma)
    attn_scale: float  # query-key product scale
    sandwich_norms: bool  # a norm on the attention and MLP outputs before the residual add
    layer_kinds: tuple[str, ...]  # per layer: its rope table's name ("full_attention", "sliding_attention", ...)
    windows: tuple[int, ...]  # per layer: keys a query sees at most, itself included (0: all)

    @staticmethod
    def of(model) -> "Architecture":
        c = model.config
        family = FAMILIES.get(getattr(c, "model_type", ""))
        if family is None:
            raise UnsupportedModel(f"architecture {getattr(c, 'model_type', '?')!r} is not one the exact target "
                                   f"runs ({', '.join(sorted(set(FAMILIES.values())))})")
        for cap in ("final_logit_softcapping", "attn_logit_softcapping"):
            if getattr(c, cap, None):
                raise UnsupportedModel(f"{cap} is not supported by the exact target")
        if float(getattr(c, "partial_rotary_factor", 1.0) or 1.0) != 1.0:
            raise UnsupportedModel("partial rotary embeddings are not supported by the exact target")
        act_name = getattr(c, "hidden_activation", None) or getattr(c, "hidden_act", "silu")
        if act_name not in ACTIVATIONS:
            raise UnsupportedModel(f"activation {act_name!r} is not supported by the exact target")
        n = int(c.num_hidden_layers)
        kinds = tuple(getattr(c, "layer_types", None) or ["full_attention"] * n)
        window = int(getattr(c, "sliding_window", None) or 0)
        if family == "mistral":
            windows = (window,) * n
        else:
            windows = tuple(window if k == "sliding_attention" else 0 for k in kinds)
        if family == "qwen2" and not getattr(c, "use_sliding_window", False):
            windows = (0,) * n
        head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
        gemma = family == "gemma3"
        scale = float(c.query_pre_attn_scalar) ** -0.5 if gemma else head_dim ** -0.5
        return Architecture(family, ACTIVATIONS[act_name], 1.0 if gemma else 0.0,
                            float(c.hidden_size) ** 0.5 if gemma else 1.0, scale, gemma, kinds, windows)


@dataclass(frozen=True)
class LayerExtras:
    """A layer's weights beyond Llama's (float32, the norm offset folded in; None where absent)."""

    qkv_bias: Optional[torch.Tensor]  # ((heads + 2*kv_heads)*head_dim,)
    q_norm: Optional[torch.Tensor]  # (head_dim,)
    k_norm: Optional[torch.Tensor]
    post_attn: Optional[torch.Tensor]  # (hidden,): norm of the attention output (Gemma)
    post_mlp: Optional[torch.Tensor]  # (hidden,): norm of the MLP output (Gemma)


def norm_weight(norm, arch: Architecture) -> torch.Tensor:
    """An RMS norm's effective per-channel scale, float32."""
    return (norm.weight.detach().float() + arch.norm_offset).contiguous()


def layer_extras(layer, arch: Architecture) -> LayerExtras:
    a = layer.self_attn
    biases = [getattr(p, "bias", None) for p in (a.q_proj, a.k_proj, a.v_proj)]
    if getattr(a.o_proj, "bias", None) is not None:
        raise UnsupportedModel("an output-projection bias is not supported by the exact target")
    if any(b is not None for b in biases) and not all(b is not None for b in biases):
        raise UnsupportedModel("biases on only some of q/k/v are not supported by the exact target")
    bias = torch.cat([b.detach().float() for b in biases]).contiguous() if biases[0] is not None else None
    q_norm = norm_weight(a.q_norm, arch) if getattr(a, "q_norm", None) is not None else None
    k_norm = norm_weight(a.k_norm, arch) if getattr(a, "k_norm", None) is not None else None
    if (q_norm is None) != (k_norm is None):
        raise UnsupportedModel("a norm on only one of q and k is not supported by the exact target")
    if arch.sandwich_norms:
        return LayerExtras(bias, q_norm, k_norm, norm_weight(layer.post_attention_layernorm, arch),
                           norm_weight(layer.post_feedforward_layernorm, arch))
    return LayerExtras(bias, q_norm, k_norm, None, None)


def mlp_norm(layer, arch: Architecture):
    """The norm before the MLP (Llama names it post_attention_layernorm; Gemma has both)."""
    return layer.pre_feedforward_layernorm if arch.sandwich_norms else layer.post_attention_layernorm


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer's Llama-shaped weights as stored (detached), the projections read
    together stacked; norm scales float32 with the family's offset folded in."""

    ln_attn: torch.Tensor  # (hidden,)
    qkv: torch.Tensor  # ((heads + 2*kv_heads)*head_dim, hidden): q, k, v projections stacked (one GEMM)
    o: torch.Tensor  # (hidden, heads*head_dim)
    ln_mlp: torch.Tensor  # (hidden,)
    gate_up: torch.Tensor  # (2*intermediate, hidden): gate and up stacked
    down: torch.Tensor  # (hidden, intermediate)


def decoder_layers(model, arch: Architecture, stored_norms: bool = False) -> list[LayerWeights]:
    """The decoder layers' main weights (a family's extras: `layer_extras`); `stored_norms`: the
    norm weights as stored (plain Llama only), else `norm_weight`'s float32 scales."""
    norm = (lambda n, _: n.weight.detach()) if stored_norms else norm_weight
    out = []
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        out.append(LayerWeights(
            norm(layer.input_layernorm, arch), torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
            a.o_proj.weight.detach(), norm(mlp_norm(layer, arch), arch),
            torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach(), m.down_proj.weight.detach()))
    return out


def llama_layers(model, target: str) -> list[LayerWeights]:
    """The decoder layers of a plain Llama model (nothing beyond Llama's weights and switches);
    `target` names the target that refuses anything else (in the error)."""
    arch = Architecture.of(model)
    plain = Architecture(arch.family, SILU, 0.0, 1.0, arch.attn_scale, False, arch.layer_kinds, (0,) * len(arch.windows))
    if arch.family not in ("llama", "mistral") or arch != plain:
        raise UnsupportedModel(f"the {target} target runs plain Llama models only (this is {arch.family})")
    if any(layer_extras(l, arch) != LayerExtras(None, None, None, None, None) for l in model.model.layers):
        raise UnsupportedModel(f"attention biases and q/k norms are not supported by the {target} target")
    return decoder_layers(model, arch, stored_norms=True)


def rope_tables(model, arch: Architecture, n: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{layer kind: (cos, sin)}, each (n, head_dim) float32 for positions 0..n-1, from the model's
    own rotary module (so rope scaling is transformers' own), half-split convention."""
    rotary = model.model.rotary_emb
    types = getattr(rotary, "rope_type", "default")
    for kind in set(arch.layer_kinds):
        t = types.get(kind, "default") if isinstance(types, dict) else types
        if t not in STATIC_ROPE:
            raise UnsupportedModel(f"rope type {t!r} (tables that change with the sequence length) is not supported")
    x = torch.zeros(1, dtype=torch.float32)
    pos = torch.arange(n)[None]
    out = {}
    with torch.no_grad():
        for kind in sorted(set(arch.layer_kinds)):
            cos, sin = rotary(x, pos, kind) if arch.family == "gemma3" else rotary(x, pos)
            out[kind] = (cos[0].float().contiguous(), sin[0].float().contiguous())
    return out
