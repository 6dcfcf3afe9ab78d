"""Prompt suites: real data loads fast, ids are unique, the eval/train split is fixed and disjoint,
ShareGPT's truncated file is handled, and custom prompt files are checked line by line."""
from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path

import pytest

from hvd.bench import suites as S
from hvd.bench.suites import (
    Prompt,
    PromptFileError,
    iter_json_array,
    load_prompts_file,
    load_suite,
    mixed_real_prompts,
    parse_sharegpt,
    split_of,
)

MIN_EVAL = {"agentic-edit": 100, "agentic-tools": 500, "structured": 500, "code": 100, "chat": 150, "long-context": 50}


def _both(name: str) -> list[Prompt]:
    return load_suite(name, "eval") + load_suite(name, "train")


def _split_key(p: Prompt) -> str:
    suite, rest = p.id.split(":", 1)
    if suite in ("agentic-edit", "long-context"):
        return "stdlib:" + rest.rsplit(":", 1)[0]
    if suite == "agentic-tools":
        return "bfcl-multi-turn:" + rest.split(":")[0].rsplit("_", 1)[1]
    return p.id


# ---- the suites ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", S.SUITES)
def test_suite_loads_real_prompts_fast(name):
    S.clear_cache()
    start = time.perf_counter()
    prompts = load_suite(name)
    assert time.perf_counter() - start < 5  # ~1 s or less on a laptop; generous for busy CI machines
    assert len(prompts) >= MIN_EVAL[name]
    for p in prompts:
        assert isinstance(p, Prompt) and p.dataset and p.max_new_tokens == S.DEFAULT_MAX_NEW_TOKENS[name]
        assert isinstance(p.messages, tuple) and p.messages
        assert all(isinstance(m["role"], str) and isinstance(m["content"], str) and m["content"].strip() for m in p.messages)
        assert p.messages[-1]["role"] == "user"
        assert p.id.startswith(name + ":")
    assert len({p.id for p in _both(name)}) == len(_both(name))


@pytest.mark.parametrize("name", S.SUITES)
def test_split_is_disjoint_deterministic_and_follows_the_documented_rule(name):
    ev, tr = load_suite(name, "eval"), load_suite(name, "train")
    assert tr and not {p.id for p in ev} & {p.id for p in tr}
    assert 0.1 < len(tr) / (len(ev) + len(tr)) < 0.35
    assert all(split_of(_split_key(p)) == "eval" for p in ev)
    assert all(split_of(_split_key(p)) == "train" for p in tr)
    S.clear_cache()
    again = load_suite(name, "eval")
    assert [(p.id, p.messages) for p in again] == [(p.id, p.messages) for p in ev]


def test_a_stdlib_file_is_on_the_same_side_in_every_suite():
    def files(name, split):
        return {_split_key(p) for p in load_suite(name, split)}

    assert not files("agentic-edit", "train") & files("long-context", "eval")
    assert not files("long-context", "train") & files("agentic-edit", "eval")


def test_agentic_edit_requests_name_real_functions_of_small_files():
    for p in _both("agentic-edit"):
        text = p.messages[0]["content"]
        source = text.split("```python\n", 1)[1].split("```", 1)[0]
        request = text.rsplit("```", 1)[1]
        assert request.strip().endswith("Return the complete updated file.")
        assert 40 <= source.count("\n") <= 150 and S.estimate_tokens(source) <= S.EDIT_FILE_MAX_TOKENS
        tree = ast.parse(source)
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        named = re.findall(r"`([\w.]+)`", request)
        assert any(n.split(".")[-1] in defined for n in named), (p.id, request)
        if p.id.endswith(":rename-parameter"):
            params = {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in (*n.posonlyargs, *n.args, *n.kwonlyargs)}
            assert named[0] in params


def test_agentic_tools_turns_carry_earlier_calls_and_real_results():
    prompts = {p.id: p for p in _both("agentic-tools")}
    for p in prompts.values():
        turn = int(p.id.rsplit(":turn", 1)[1])
        roles = [m["role"] for m in p.messages]
        assert roles[0] == "system" and "Initial state of the environment" in p.messages[0]["content"]
        assert roles.count("user") == turn + 1 and roles.count("assistant") == turn
    first = prompts["agentic-tools:multi_turn_base_0:turn1"].messages
    assert first[2]["role"] == "assistant" and first[2]["content"].startswith("[cd(folder='document')")
    assert first[3]["role"] == "tool" and '"current_working_directory": "document"' in first[3]["content"]


def test_agentic_tools_miss_func_adds_the_function_only_at_its_turn():
    p = next(p for p in _both("agentic-tools") if p.id == "agentic-tools:multi_turn_miss_func_0:turn3")
    schemas = [json.loads(line) for line in p.messages[0]["content"].splitlines() if line.startswith('{"name"')]
    names = {s["name"] for s in schemas}
    assert "sort" not in names and {"cd", "mv", "grep"} <= names
    assert '"name": "sort"' in p.messages[-1]["content"]


def test_structured_lists_json_schemas_and_asks_for_a_json_call():
    for p in load_suite("structured", limit=50):
        system, user = p.messages[0]["content"], p.messages[-1]["content"]
        schemas = [json.loads(line) for line in system.splitlines() if line.startswith("{")]
        assert schemas and all("name" in s and "parameters" in s for s in schemas)
        assert "JSON list" in system and user.strip()
    assert {p.dataset for p in load_suite("structured", limit=8)} == {f"bfcl-{c}" for c in S._STRUCTURED_CATEGORIES}


def test_code_chat_and_long_context_contents():
    assert all(p.messages[0]["content"].startswith("Complete the following Python function:") for p in _both("code"))
    assert {p.dataset for p in load_suite("chat")} == {"mt-bench", "sharegpt"}
    for p in _both("long-context"):
        assert S.estimate_tokens(p.messages[0]["content"]) < 3000


def test_limit_override_and_returned_copies():
    ps = load_suite("code", limit=3, max_new_tokens=17)
    assert len(ps) == 3 and all(p.max_new_tokens == 17 for p in ps)
    assert load_suite("code", limit=0) == []
    ps[0].messages[0]["content"] = "changed"
    assert load_suite("code", limit=1)[0].messages[0]["content"] != "changed"
    chat = ps[1].chat()
    assert isinstance(chat, list) and chat == list(ps[1].messages) and chat[0] is not ps[1].messages[0]


def test_unknown_suite_and_split_are_rejected():
    with pytest.raises(ValueError) as e:
        load_suite("nope")
    assert all(name in str(e.value) for name in S.SUITES)
    with pytest.raises(ValueError, match="split"):
        load_suite("code", split="test")
    with pytest.raises(ValueError, match="max_new_tokens"):
        load_suite("code", max_new_tokens=0)


def test_mixed_real_prompts_cover_five_kinds_of_eval_prompts():
    mixed = mixed_real_prompts(4)
    assert len(mixed) == 20 and len({p.id for p in mixed}) == 20
    assert {p.id.split(":")[0] for p in mixed} == set(S.MIXED_SUITES)
    eval_ids = {p.id for name in S.MIXED_SUITES for p in load_suite(name)}
    assert all(p.id in eval_ids for p in mixed)
    assert all(any(m["role"] == "tool" for m in p.messages) for p in mixed if p.id.startswith("agentic-tools"))


# ---- ShareGPT's truncated file ------------------------------------------------------------


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
    from hvd.bench.suites import sharegpt_training_prompts

    extra = sharegpt_training_prompts(30)
    texts = {p.messages[-1]["content"] for p in _both("chat")}
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
    got = parse_sharegpt(S._sharegpt_path(), limit=20)
    assert len(got) == 20 and time.perf_counter() - start < 2


# ---- custom prompt files ------------------------------------------------------------------

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
    assert (a.id, a.dataset, a.messages, a.max_new_tokens) == ("a", "my_prompts", ({"role": "user", "content": "Say hi."},), S.CUSTOM_MAX_NEW_TOKENS)
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
