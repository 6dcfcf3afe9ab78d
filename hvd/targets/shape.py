"""The shape of a Llama-family model, read from its transformers config, and its rotary tables:
what the lean and exact targets share."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    eps: float
    rope_theta: float
    max_context: int

    @staticmethod
    def of(config) -> "LlamaShape":
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        rope = getattr(config, "rope_parameters", None) or {}
        theta = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)) or 10000.0)
        scaling = rope.get("rope_type", "default") if rope else (getattr(config, "rope_scaling", None) or {}).get("rope_type", "default")
        if scaling not in (None, "default"):
            raise UnsupportedModel(f"rope scaling {scaling!r} is not supported by the lean target")
        return LlamaShape(int(config.num_hidden_layers), int(config.hidden_size), heads,
                          int(getattr(config, "num_key_value_heads", heads)), head_dim, int(config.vocab_size),
                          float(config.rms_norm_eps), theta, int(getattr(config, "max_position_embeddings", 2048)))


class UnsupportedModel(ValueError):
    """A model the lean target cannot run (not Llama-shaped, or kernels not batch-invariant here)."""


def rope_tables(shape: LlamaShape, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n, head_dim) float32 for positions 0..n-1 (half-split convention)."""
    d = shape.head_dim
    inv = 1.0 / (shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # (d/2,)
    ang = torch.arange(n, dtype=torch.float32)[:, None] * inv  # (n, d/2)
    ang = torch.cat([ang, ang], dim=-1)  # (n, d)
    return ang.cos(), ang.sin()


@dataclass(frozen=True)
class LlamaLayerWeights:
    """One decoder layer's weights as stored (detached), the projections read together stacked."""

    ln_attn: torch.Tensor  # (hidden,)
    qkv: torch.Tensor  # ((heads + 2*kv_heads)*head_dim, hidden): q, k, v projections stacked (one GEMM)
    o: torch.Tensor  # (hidden, heads*head_dim)
    ln_mlp: torch.Tensor  # (hidden,)
    gate_up: torch.Tensor  # (2*intermediate, hidden): gate and up stacked
    down: torch.Tensor  # (hidden, intermediate)


def llama_layers(model, target: str) -> list[LlamaLayerWeights]:
    """The decoder layers of a transformers Llama-family model; `target` names the target that
    refuses attention biases (in the error)."""
    out = []
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        if any(getattr(p, "bias", None) is not None for p in (a.q_proj, a.k_proj, a.v_proj, a.o_proj)):
            raise UnsupportedModel(f"attention biases are not supported by the {target} target")
        out.append(LlamaLayerWeights(
            layer.input_layernorm.weight.detach(), torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
            a.o_proj.weight.detach(), layer.post_attention_layernorm.weight.detach(),
            torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach(), m.down_proj.weight.detach()))
    return out
