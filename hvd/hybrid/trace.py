"""`hvd trace`: the predictor's training data, from replayed target greedy outputs.

For each training prompt (the suites' train split: never an evaluation item) `ar`'s greedy
output is recorded once (hvd/offline/references.py), then a hybrid drafter is replayed over
it (hvd/offline/replay.py) with the `rule` policy as the behaviour policy. At every step with a
cache draft we keep the feature vector the hybrid computed before choosing and the label:
how many leading cache-draft tokens equal the recorded continuation, the accepted length
that draft would get (HVD's trace-replay labels; no extra target forwards).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hvd.hybrid.features import FEATURES


@dataclass(frozen=True)
class TraceConfig:
    suites: tuple[str, ...] = ("agentic-edit", "agentic-tools", "structured", "code", "chat")
    limit: int = 12  # train prompts per suite
    max_new_tokens: int = 256
    model_arm: str = "aded"


@dataclass
class Traces:
    x: np.ndarray  # (N, F) features before verification
    y: np.ndarray  # (N,) accepted length of the cache draft
    dataset: np.ndarray  # (N,) suite name of each step
    prompt: np.ndarray  # (N,) prompt id of each step

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, x=self.x, y=self.y, dataset=self.dataset, prompt=self.prompt,
                            features=np.array(FEATURES))

    @staticmethod
    def load(path: Path) -> "Traces":
        d = np.load(path)
        if tuple(d["features"].tolist()) != FEATURES:
            raise ValueError(f"{path} holds other features than this version computes; re-run `hvd trace`")
        return Traces(d["x"], d["y"], d["dataset"], d["prompt"])


def trace_prompt(engine, hybrid, prompt, max_new_tokens: int, store) -> tuple[list[np.ndarray], list[int]]:
    """Replay `hybrid` (recording) over `ar`'s output for one prompt: (features, labels)."""
    from hvd.offline.references import reference
    from hvd.offline.replay import replay

    ids = engine.encode(list(prompt.messages))
    ref = reference(engine, store, prompt.id, ids, max_new_tokens)
    hybrid.log = []
    replay(hybrid, ids, ref, limit=engine.token_limit(len(ids), max_new_tokens))
    xs, ys = [], []
    for position, x, cdraft in hybrid.log:
        xs.append(x)
        ys.append(cdraft.matched(ref[position:]))
    hybrid.log = None
    return xs, ys


def collect(engine, prompts: Sequence, make_hybrid: Callable[[], object], max_new_tokens: int,
            store, tick: Callable[[], None] = lambda: None) -> Traces:
    xs: list[np.ndarray] = []
    ys: list[int] = []
    names: list[str] = []
    pids: list[str] = []
    for p in prompts:
        x, y = trace_prompt(engine, make_hybrid(), p, max_new_tokens, store)
        xs += x
        ys += y
        names += [p.dataset] * len(y)
        pids += [p.id] * len(y)
        tick()
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0, len(FEATURES)), np.float32)
    return Traces(x, np.array(ys, dtype=np.float32), np.array(names), np.array(pids))


def split_by_prompt(t: Traces, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, held-out) that keep each prompt's steps on one side."""
    ids = sorted(set(t.prompt.tolist()))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(ids, size=max(1, int(round(held_out * len(ids)))), replace=False).tolist()) if ids else set()
    mask = np.array([p in held for p in t.prompt.tolist()], dtype=bool)
    return ~mask, mask

