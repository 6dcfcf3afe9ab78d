"""Custom prompt files: rows load with their category (or the file's stem) as dataset, are all
eval, and every malformed line is reported with its file and line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvd.data.prompts import CUSTOM_MAX_NEW_TOKENS, PromptFileError, load_prompts_file
from hvd.data.suites import load_suite

GOOD_ROWS = [
    {"id": "a", "prompt": "Say hi."},
    {"id": "b", "category": "travel", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Plan a trip."}], "max_new_tokens": 32},
]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_custom_file_loads_with_category_or_stem_as_dataset(tmp_path):
    path = _write_lines(tmp_path / "my_prompts.jsonl", [json.dumps(GOOD_ROWS[0]), "", json.dumps(GOOD_ROWS[1])])
    a, b = load_prompts_file(path)
    assert (a.id, a.dataset, a.messages, a.max_new_tokens) == ("a", "my_prompts", ({"role": "user", "content": "Say hi."},), CUSTOM_MAX_NEW_TOKENS)
    assert (b.id, b.dataset, b.max_new_tokens) == ("b", "travel", 32)
    assert [m["role"] for m in b.messages] == ["system", "user"]
    assert [p.id for p in load_suite(str(path))] == ["a", "b"]
    assert load_suite(str(path), "train") == []


BAD_LINES = [
    ("{", "bad JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"prompt": "x"}', 'missing "id"'),
    ('{"id": 3, "prompt": "x"}', '"id" must be a non-empty string'),
    ('{"id": "x", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}', "both given"),
    ('{"id": "x"}', "neither given"),
    ('{"id": "x", "prompt": ""}', '"prompt" must be a non-empty string'),
    ('{"id": "x", "messages": "hello"}', '"messages" must be a non-empty list'),
    ('{"id": "x", "messages": []}', '"messages" must be a non-empty list'),
    ('{"id": "x", "messages": [{"role": "user"}]}', "item 0"),
    ('{"id": "x", "messages": [{"role": "user", "content": 5}]}', "item 0"),
    ('{"id": "x", "messages": [{"role": "user", "content": "ok"}, "hi"]}', "item 1"),
    ('{"id": "x", "prompt": "x", "max_new_tokens": 0}', '"max_new_tokens" must be a positive integer'),
    ('{"id": "x", "prompt": "x", "max_new_tokens": "5"}', '"max_new_tokens" must be a positive integer'),
    ('{"id": "x", "prompt": "x", "max_new_tokens": true}', '"max_new_tokens" must be a positive integer'),
    ('{"id": "x", "prompt": "x", "max_new_tokens": 1.5}', '"max_new_tokens" must be a positive integer'),
    ('{"id": "x", "prompt": "x", "category": 7}', '"category" must be a non-empty string'),
    ('{"id": "a", "prompt": "again"}', "duplicate id 'a' (first on line 1)"),
]


@pytest.mark.parametrize("line,fragment", BAD_LINES)
def test_custom_file_errors_name_file_and_line(tmp_path, line, fragment):
    path = _write_lines(tmp_path / "p.jsonl", [json.dumps(GOOD_ROWS[0]), "", line])
    with pytest.raises(PromptFileError) as e:
        load_prompts_file(path)
    message = str(e.value)
    assert isinstance(e.value, ValueError)
    assert message.startswith(f"{path}:3: ") and fragment in message and "\n" not in message


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_empty_custom_file_is_an_error(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PromptFileError, match="empty file"):
        load_prompts_file(path)


def test_missing_custom_file_is_an_error(tmp_path):
    with pytest.raises(PromptFileError, match="cannot read"):
        load_prompts_file(tmp_path / "absent.jsonl")
