"""Training data for a block drafter: target-aligned token sequences and their target features.

Sources (train split only, never evaluation items): the train-split prompts of the bench
suites (`load_suite(..., split="train")`, chat template applied) and train-split standard
library files as raw text (split key ``stdlib:<path>``, the suites' own rule), then, on
request, ShareGPT conversations past the chat suite's own (`sharegpt_training_prompts`:
never a bench item in either split), for more target-written chat. With
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

from hvd.targets.protocol import TeacherForced

TRAIN_SUITES = ("agentic-edit", "agentic-tools", "structured", "code", "chat")


@dataclass(frozen=True)
class DataConfig:
    suites: tuple[str, ...] = TRAIN_SUITES
    prompts_per_suite: Optional[int] = None  # None: every train prompt
    suite_prompts: tuple[tuple[str, int], ...] = ()  # per-suite overrides, e.g. (("chat", 200),)
    regenerate: int = 128  # target greedy tokens appended to each prompt (0: the prompt alone)
    stdlib_files: int = 60  # train-split standard library files, as raw text
    sharegpt_extra: int = 0  # ShareGPT conversations beyond the chat suite's (never bench items)
    max_len: int = 1536  # tokens per sequence (longer ones keep their first max_len)
    holdout_every: int = 20  # every n-th sequence is held out for τ evaluation

    def __post_init__(self) -> None:
        if self.prompts_per_suite is not None and self.prompts_per_suite <= 0:
            raise ValueError("prompts_per_suite must be positive (None: every train prompt)")
        if min(self.regenerate, self.stdlib_files, self.sharegpt_extra, *(n for _, n in self.suite_prompts)) < 0:
            raise ValueError("regenerate, stdlib_files, sharegpt_extra and per-suite prompt counts must be >= 0")
        if self.max_len <= 0 or self.holdout_every <= 1:
            raise ValueError("need max_len > 0 and holdout_every > 1")


def _stdlib_train_texts(limit: int) -> Iterator[tuple[str, str]]:
    from hvd.data.prompts import split_of
    from hvd.data.stdlib import stdlib_files, stdlib_root

    n = 0
    for rel, size in stdlib_files():
        if n >= limit:
            return
        if split_of(f"stdlib:{rel}") != "train" or not 2000 <= size <= 40000:
            continue
        try:
            yield rel, (stdlib_root() / rel).read_text(encoding="utf-8")
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
    """(key, ids(engine)) per training sequence: suite train prompts, then stdlib text, then the
    extra ShareGPT conversations; the ids are computed only when asked (prompts: a greedy
    regeneration)."""
    from hvd.data.chat import sharegpt_training_prompts
    from hvd.data.suites import load_suite

    for suite in cfg.suites:
        for p in load_suite(suite, split="train", limit=dict(cfg.suite_prompts).get(suite, cfg.prompts_per_suite)):
            yield f"{suite}:{p.id}", partial(_prompt_ids, prompt=p, cfg=cfg)
    for rel, text in _stdlib_train_texts(cfg.stdlib_files):
        yield f"stdlib:{rel}", lambda engine, text=text: engine.tokenizer.encode(text)[: cfg.max_len]
    for p in sharegpt_training_prompts(cfg.sharegpt_extra):  # last: earlier sequences keep their held-out slots
        yield p.id, partial(_prompt_ids, prompt=p, cfg=cfg)


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

    if not isinstance(engine.target, TeacherForced):
        raise TypeError(f"training data needs a target that runs whole sequences; {type(engine.target).__name__} cannot")
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


def draft_vocabulary(shards: list[Shard]) -> torch.Tensor:
    """(n,) every token that is a label somewhere in `shards`, most frequent first: what the
    drafter learned to predict (its draft vocabulary, see hvd/drafters/dflash.py)."""
    ids, counts = torch.cat([s.labels for s in shards]).unique(return_counts=True)
    return ids[counts.argsort(descending=True, stable=True)]


@dataclass
class Batch:
    """B sequences with M blocks each, packed: every block of a sequence shares one context."""
    first: torch.Tensor  # (B, M) each block's first token
    pos: torch.Tensor  # (B, M*K) absolute positions of the blocks' tokens
    feats: torch.Tensor  # (B, W, n_layers*hidden) context features, left-padded
    ctx_pos: torch.Tensor  # (B, W)
    ctx_mask: torch.Tensor  # (B, M*K, W) True = the block token sees that context token
    labels: torch.Tensor  # (B*M, K−1) target argmax for each predicted slot


def _anchors(length: int, m: int, block: int, window: int, rng: random.Random) -> list[int]:
    """m block starts i (1 ≤ i ≤ length−block) within one window-long span of the sequence."""
    hi = length - block
    lo = rng.randrange(1, hi + 1)
    span = range(lo, min(hi, lo + window - 1) + 1)
    return sorted(rng.choices(span, k=m))


def sample_batch(shards: list[Shard], n: int, block: int, window: int, rng: random.Random,
                 anchors: int = 1) -> Batch:
    """`n` random sequences with `anchors` blocks each. A block of `block` tokens starting at
    position i sees the features of the `window` tokens before i; its labels are the target's
    next tokens. The blocks of a sequence share one context (up to 2·window tokens), so the
    context projection is paid once per sequence rather than once per block."""
    usable = [s for s in shards if s.tokens.shape[0] > block]
    picks = []
    for _ in range(n):
        s = rng.choice(usable)
        starts = _anchors(s.tokens.shape[0], anchors, block, window, rng)
        picks.append((s, starts, max(0, starts[0] - window), starts[-1]))
    width = max(hi - lo for _, _, lo, hi in picks)
    firsts, poss, feats, cposs, masks, labels = [], [], [], [], [], []
    for s, starts, lo, hi in picks:
        pad = width - (hi - lo)
        f = s.feats[lo:hi].float()  # (hi−lo, F)
        feats.append(torch.cat([f.new_zeros(pad, f.shape[1]), f]))
        cpos = torch.cat([torch.full((pad,), -1, dtype=torch.long), torch.arange(lo, hi)])  # (W,) −1: padding
        cposs.append(cpos.clamp(min=0))
        i = torch.tensor(starts)  # (M,)
        seen = (cpos[None] >= 0) & (cpos[None] < i[:, None]) & (cpos[None] >= i[:, None] - window)  # (M, W)
        masks.append(seen.repeat_interleave(block, dim=0))  # (M*K, W)
        firsts.append(s.tokens[i])
        poss.append((i[:, None] + torch.arange(block)).reshape(-1))
        labels.append(torch.stack([s.labels[j : j + block - 1] for j in starts]))
    return Batch(torch.stack(firsts), torch.stack(poss), torch.stack(feats), torch.stack(cposs),
                 torch.stack(masks), torch.cat(labels))
