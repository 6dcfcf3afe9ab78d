"""Training data for a block drafter: target-aligned token sequences and their target features.

Sources (train split only, never evaluation items): the train-split prompts of the bench
suites (`load_suite(..., split="train")`, chat template applied) and train-split standard
library files as raw text (split key ``stdlib:<path>``, the suites' own rule). With
`regenerate` > 0 each prompt is followed by the target's own greedy continuation, so the
response tokens are exactly what the target produces (the drafter learns the target, not
the text). Labels are teacher-forced: one target forward per sequence gives both the hidden
states of the drafter's layers and the target's argmax after every prefix.

The cache is a directory of safetensors shards (one per sequence: tokens (L,) int32, labels
(L,) int32, feats (L, n_layers*hidden) float16) plus `index.json`; building it again skips
shards already written with the same layers, regeneration and length (each shard's metadata
says), so an interrupted build resumes and several builds may share the work.
"""
from __future__ import annotations

import json
import os
import random
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from functools import partial
from typing import Callable, Iterator, Optional

import torch

TRAIN_SUITES = ("agentic-edit", "agentic-tools", "structured", "code", "chat")


@dataclass(frozen=True)
class DataConfig:
    suites: tuple[str, ...] = TRAIN_SUITES
    prompts_per_suite: Optional[int] = None  # None: every train prompt
    regenerate: int = 128  # target greedy tokens appended to each prompt (0: the prompt alone)
    stdlib_files: int = 60  # train-split standard library files, as raw text
    max_len: int = 1536  # tokens per sequence (longer ones keep their first max_len)
    holdout_every: int = 20  # every n-th sequence is held out for τ evaluation


def _stdlib_train_texts(limit: int) -> Iterator[tuple[str, str]]:
    from hvd.bench.suites import _stdlib_files, _stdlib_root, split_of

    n = 0
    for rel, size in _stdlib_files():
        if n >= limit:
            return
        if split_of(f"stdlib:{rel}") != "train" or not 2000 <= size <= 40000:
            continue
        try:
            yield rel, (_stdlib_root() / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        n += 1


def _prompt_ids(engine, prompt, cfg: DataConfig) -> list[int]:
    limit = min(cfg.max_len, engine.target.max_context)
    ids = engine.encode(prompt.chat())[:limit]
    if cfg.regenerate > 0 and len(ids) < limit:
        n = min(cfg.regenerate, limit - len(ids))
        ids = ids + engine.generate(ids, method="ar", max_new_tokens=n).token_ids
    return ids


def sources(cfg: DataConfig) -> Iterator[tuple[str, Callable[[object], list[int]]]]:
    """(key, ids(engine)) per train-split sequence, prompts first, then stdlib text; the ids
    are computed only when asked (prompts: a greedy regeneration)."""
    from hvd.bench.suites import load_suite

    for suite in cfg.suites:
        for p in load_suite(suite, split="train", limit=cfg.prompts_per_suite):
            yield f"{suite}:{p.id}", partial(_prompt_ids, prompt=p, cfg=cfg)
    for rel, text in _stdlib_train_texts(cfg.stdlib_files):
        yield f"stdlib:{rel}", lambda engine, text=text: engine.tokenizer.encode(text)[: cfg.max_len]


def shard_name(key: str) -> str:
    return f"{zlib.crc32(key.encode()):08x}.safetensors"


def _shard_meta(key: str, cfg: DataConfig, layers: tuple[int, ...]) -> dict[str, str]:
    """What a shard was built with: a shard is reused only when all of it matches."""
    return {"key": key, "layers": json.dumps(list(layers)), "regenerate": str(cfg.regenerate),
            "max_len": str(cfg.max_len)}


def _reusable(path: Path, key: str, cfg: DataConfig, layers: tuple[int, ...]) -> bool:
    from safetensors import safe_open

    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as f:
        return f.metadata() == _shard_meta(key, cfg, layers)


def build_cache(engine, cfg: DataConfig, layers: tuple[int, ...], out: Path, progress=None) -> list[str]:
    """Write one shard per sequence under `out` (existing shards are kept); the shard names."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    names = []
    for key, make_ids in sources(cfg):
        name = shard_name(key)
        if progress is not None:
            progress(key)
        if _reusable(out / name, key, cfg, layers):
            names.append(name)
            continue
        ids = make_ids(engine)
        if len(ids) < 4:
            continue
        names.append(name)
        hidden, labels = engine.target.teacher_forced(ids, layers)
        feats = torch.cat([hidden[l] for l in layers], dim=-1).to(torch.float16)  # (L, n_layers*hidden)
        tmp = out / f"{name}.tmp{os.getpid()}"
        save_file({"tokens": torch.tensor(ids, dtype=torch.int32), "labels": labels.to(torch.int32),
                   "feats": feats.contiguous()}, str(tmp), metadata=_shard_meta(key, cfg, layers))
        tmp.rename(out / name)  # atomic: an interrupted build (or a parallel one) never leaves half a shard
    (out / "index.json").write_text(json.dumps({"config": asdict(cfg), "layers": list(layers), "shards": names},
                                               indent=2))
    return names


@dataclass
class Shard:
    tokens: torch.Tensor  # (L,) int64
    labels: torch.Tensor  # (L,) int64 target argmax after each prefix
    feats: torch.Tensor  # (L, n_layers*hidden) float16


def load_shards(out: Path) -> list[Shard]:
    from safetensors.torch import load_file

    index = json.loads((out / "index.json").read_text())
    shards = []
    for name in index["shards"]:
        if (out / name).is_file():
            t = load_file(str(out / name))
            shards.append(Shard(t["tokens"].long(), t["labels"].long(), t["feats"]))
    return shards


@dataclass
class Batch:
    first: torch.Tensor  # (B,) block's first token
    pos: torch.Tensor  # (B, K) absolute positions of the block
    feats: torch.Tensor  # (B, W, n_layers*hidden) context features, left-padded
    ctx_pos: torch.Tensor  # (B, W)
    ctx_mask: torch.Tensor  # (B, W) True = a real context token
    labels: torch.Tensor  # (B, K−1) target argmax for each predicted slot


def sample_batch(shards: list[Shard], n: int, block: int, window: int, rng: random.Random) -> Batch:
    """`n` random anchors: a block of `block` tokens starting at position i ≥ 1, its context
    the features of the `window` tokens before i, its labels the target's next tokens."""
    usable = [s for s in shards if s.tokens.shape[0] > block]
    firsts, poss, feats, cposs, masks, labels = [], [], [], [], [], []
    for _ in range(n):
        s = rng.choice(usable)
        i = rng.randrange(1, s.tokens.shape[0] - block + 1)
        lo = max(0, i - window)
        f = s.feats[lo:i].float()  # (m, F)
        pad = window - f.shape[0]
        feats.append(torch.cat([f.new_zeros(pad, f.shape[1]), f]))
        cposs.append(torch.cat([torch.zeros(pad, dtype=torch.long), torch.arange(lo, i)]))
        masks.append(torch.cat([torch.zeros(pad, dtype=torch.bool), torch.ones(i - lo, dtype=torch.bool)]))
        firsts.append(s.tokens[i])
        poss.append(torch.arange(i, i + block))
        labels.append(s.labels[i : i + block - 1])
    return Batch(torch.stack(firsts), torch.stack(poss), torch.stack(feats), torch.stack(cposs),
                 torch.stack(masks), torch.stack(labels))
