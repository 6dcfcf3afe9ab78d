"""The chat sources: ShareGPT's truncated JSON array file is read in chunks and filtered, and its
training prompts are never chat-suite items."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hvd.data.chat import iter_json_array, parse_sharegpt, sharegpt_path, sharegpt_training_prompts

from prompts_util import both_splits


def _conversation(i: int, first_from: str = "human", text: str | None = None) -> dict:
    text = text if text is not None else f'Question number {i}: explain "quotes", back\\slashes and \u00e9 please.'
    return {"id": f"c{i}", "conversations": [{"from": first_from, "value": text}, {"from": "gpt", "value": "ok"}]}


def _write_array(path: Path, records: list[dict], tail: str) -> Path:
    path.write_text("[\n" + ",\n".join(json.dumps(r, indent=2) for r in records) + tail, encoding="utf-8")
    return path


@pytest.mark.parametrize("chunk_chars", [3, 64, 1 << 20])
@pytest.mark.parametrize("cut", [1, 20, 45, 90])
def test_sharegpt_parser_drops_a_truncated_last_record(tmp_path, chunk_chars, cut):
    complete = [_conversation(i) for i in range(5)]
    partial = json.dumps(_conversation(99), indent=2)[:cut]
    path = _write_array(tmp_path / "cut.json", complete, ",\n" + partial)
    got = parse_sharegpt(path, limit=100, chunk_chars=chunk_chars)
    assert got == [(f"c{i}", complete[i]["conversations"][0]["value"]) for i in range(5)]


@pytest.mark.parametrize("tail", ["\n]\n", ",\n", ",", ""])
def test_sharegpt_parser_reads_whole_and_cut_between_records_files(tmp_path, tail):
    path = _write_array(tmp_path / "whole.json", [_conversation(i) for i in range(4)], tail)
    assert [i for i, _ in parse_sharegpt(path, chunk_chars=7)] == ["c0", "c1", "c2", "c3"]


def test_sharegpt_parser_filters_and_stops_at_the_limit(tmp_path):
    records = [
        _conversation(0, first_from="gpt"),
        _conversation(1, text="hi"),
        _conversation(2, text="\u4f60\u597d" * 20),
        _conversation(3),
        _conversation(4, text=_conversation(3)["conversations"][0]["value"]),
        _conversation(5),
        _conversation(6),
    ]
    path = _write_array(tmp_path / "f.json", records, "\n]")
    assert [i for i, _ in parse_sharegpt(path)] == ["c3", "c5", "c6"]
    assert [i for i, _ in parse_sharegpt(path, limit=2)] == ["c3", "c5"]


def test_sharegpt_training_prompts_are_never_chat_suite_items():
    extra = sharegpt_training_prompts(30)
    texts = {p.messages[-1]["content"] for p in both_splits("chat")}
    assert len(extra) == 30 and sharegpt_training_prompts(0) == []
    assert all(p.id.startswith("sharegpt-extra:") and p.messages[-1]["content"] not in texts for p in extra)
    assert len({p.id for p in extra}) == 30


def test_json_array_reader_handles_chunk_boundaries_and_rejects_non_arrays(tmp_path):
    numbers = tmp_path / "n.json"
    numbers.write_text("[1, 22, 333, {\"a\": [4, 55]}]", encoding="utf-8")
    assert list(iter_json_array(numbers, chunk_chars=2)) == [1, 22, 333, {"a": [4, 55]}]
    obj = tmp_path / "o.json"
    obj.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON array"):
        list(iter_json_array(obj))


def test_real_sharegpt_file_is_read_quickly():
    start = time.perf_counter()
    got = parse_sharegpt(sharegpt_path(), limit=20)
    assert len(got) == 20 and time.perf_counter() - start < 2
