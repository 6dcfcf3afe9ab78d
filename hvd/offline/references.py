"""Recorded `ar` greedy outputs, cached on disk, so replay never runs the same `ar` twice.

One JSONL file per model under ``$HVD_CACHE/references/<model key>.jsonl``; a line is
``{"prompt_id", "ids_sha", "max_new_tokens", "token_ids"}``. A reference is found by
(prompt id, hash of the prompt's token ids, max_new_tokens): a changed prompt, tokenizer or
chat template changes the hash, a changed model changes the file. Lines are appended whole;
an unreadable line (a crash mid-write) is ignored.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence



@dataclass(frozen=True)
class ReferenceKey:
    prompt_id: str
    ids_sha: str  # ids_hash of the prompt's token ids
    max_new_tokens: int


def ids_hash(ids: Sequence[int]) -> str:
    return hashlib.sha256(",".join(str(int(t)) for t in ids).encode()).hexdigest()[:16]


class ReferenceStore:
    """The recorded references of one model, read from its file on first use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._rows: Optional[dict[ReferenceKey, list[int]]] = None

    @classmethod
    def for_target(cls, target, root: Optional[Path] = None) -> "ReferenceStore":
        """The references of `target`: by its `fingerprint`, its model's weights as it runs them
        (the int8 target's outputs are not float32's; new kernels, new references)."""
        from hvd.machine import cache_dir

        return cls((root or cache_dir() / "references") / f"{target.fingerprint}.jsonl")

    def _load(self) -> dict[ReferenceKey, list[int]]:
        if self._rows is None:
            self._rows = {}
            if self.path.is_file():
                for line in self.path.read_text(encoding="utf-8").splitlines():
                    try:
                        row = json.loads(line)
                        key = ReferenceKey(str(row["prompt_id"]), str(row["ids_sha"]), int(row["max_new_tokens"]))
                        self._rows[key] = [int(t) for t in row["token_ids"]]
                    except (ValueError, KeyError, TypeError):
                        continue
        return self._rows

    def get(self, key: ReferenceKey) -> Optional[list[int]]:
        found = self._load().get(key)
        return None if found is None else list(found)

    def put(self, key: ReferenceKey, token_ids: Sequence[int]) -> None:
        tokens = [int(t) for t in token_ids]
        self._load()[key] = tokens
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"prompt_id": key.prompt_id, "ids_sha": key.ids_sha,
                           "max_new_tokens": key.max_new_tokens, "token_ids": tokens})
        with self.path.open("a+b") as f:
            f.seek(0, 2)
            if f.tell():  # a line cut by a crash must not swallow this one
                f.seek(-1, 2)
                line = ("" if f.read(1) == b"\n" else "\n") + line
            f.write((line + "\n").encode("utf-8"))

    def __len__(self) -> int:
        return len(self._load())


def reference(engine, store: ReferenceStore, prompt_id: str, ids: Sequence[int], max_new_tokens: int) -> list[int]:
    """`ar`'s greedy output for these token ids: from the store, else generated and stored."""
    key = ReferenceKey(prompt_id, ids_hash(ids), max_new_tokens)
    found = store.get(key)
    if found is None:
        found = engine.generate(list(ids), method="ar", max_new_tokens=max_new_tokens).token_ids
        store.put(key, found)
    return found
