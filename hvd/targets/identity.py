"""What a target says of the model it serves, read once from the transformers model when the
target is made: the tokens that end a generation, and a fingerprint of its weights as that
target runs them (the key of everything cached per model: cost curves, references, training
features)."""
from __future__ import annotations

from pathlib import Path

import torch

from hvd.machine import fingerprint


def eos_ids(model) -> frozenset[int]:
    """The model's end-of-sequence tokens from its generation config (empty: none named)."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None) if config is not None else None
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    return frozenset(int(i) for i in ids if i is not None)


def weights_key(model: torch.nn.Module) -> str:
    """The model's weights: its folder's name (wherever the cache holding it lives), its dtype,
    size and a checksum of its first and last parameter tensors (cheap; it tells apart
    different weights under one name)."""
    params = list(model.parameters())
    with torch.no_grad():
        check = [float(params[0].double().sum()), float(params[-1].double().sum())] if params else []
    name = Path(str(getattr(model, "name_or_path", "") or "")).name
    return fingerprint(name, str(params[0].dtype) if params else "", sum(p.numel() for p in params), *check)


def target_fingerprint(model: torch.nn.Module, kind: str, precision: str, build_id: str, device) -> str:
    """A target's `fingerprint`: its model's weights as `kind` runs them in `precision` with the
    kernels `build_id` on `device`."""
    return fingerprint(weights_key(model), kind, precision, build_id, str(device))
