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
        rope = rope.get("full_attention", rope)  # per layer kind (Gemma 3): the full-attention layers'
        theta = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)) or 10000.0)
        return LlamaShape(int(config.num_hidden_layers), int(config.hidden_size), heads,
                          int(getattr(config, "num_key_value_heads", heads)), head_dim, int(config.vocab_size),
                          float(config.rms_norm_eps), theta, int(getattr(config, "max_position_embeddings", 2048)))


class UnsupportedModel(ValueError):
    """A model the lean target cannot run (not Llama-shaped, or kernels not batch-invariant here)."""


def rope_scaling(config) -> str:
    """The rope type of a config's full-attention layers ("default" when unscaled)."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope = rope.get("full_attention", rope)
    return rope.get("rope_type", "default") or "default"


def rope_tables(shape: LlamaShape, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n, head_dim) float32 for positions 0..n-1 (half-split convention), unscaled rope."""
    d = shape.head_dim
    inv = 1.0 / (shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # (d/2,)
    ang = torch.arange(n, dtype=torch.float32)[:, None] * inv  # (n, d/2)
    ang = torch.cat([ang, ang], dim=-1)  # (n, d)
    return ang.cos(), ang.sin()
