"""The BFCL suites: multi-turn prompts carry earlier calls and their real results, miss_func's
functions appear at their turn, and structured prompts list JSON schemas."""
from __future__ import annotations

import json

from hvd.data.bfcl import STRUCTURED_CATEGORIES
from hvd.data.suites import load_suite

from prompts_util import both_splits


def test_agentic_tools_turns_carry_earlier_calls_and_real_results():
    prompts = {p.id: p for p in both_splits("agentic-tools")}
    for p in prompts.values():
        turn = int(p.id.rsplit(":turn", 1)[1])
        roles = [m["role"] for m in p.messages]
        assert roles[0] == "system" and "Initial state of the environment" in p.messages[0]["content"]
        assert roles.count("user") == turn + 1 and roles.count("assistant") == turn
    first = prompts["agentic-tools:multi_turn_base_0:turn1"].messages
    assert first[2]["role"] == "assistant" and first[2]["content"].startswith("[cd(folder='document')")
    assert first[3]["role"] == "tool" and '"current_working_directory": "document"' in first[3]["content"]


def test_agentic_tools_miss_func_adds_the_function_only_at_its_turn():
    p = next(p for p in both_splits("agentic-tools") if p.id == "agentic-tools:multi_turn_miss_func_0:turn3")
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
    assert {p.dataset for p in load_suite("structured", limit=8)} == {f"bfcl-{c}" for c in STRUCTURED_CATEGORIES}


def test_structured_prompts_carry_the_schema_of_a_valid_call():
    from hvd.data.bfcl import json_schema

    p = load_suite("structured", limit=1)[0]
    schema = json.loads(p.schema)
    assert schema["type"] == "array" and schema["minItems"] == 1
    call = schema["items"] if "anyOf" not in schema["items"] else schema["items"]["anyOf"][0]
    assert call["required"] == ["name", "arguments"] and "const" in call["properties"]["name"]
    assert json_schema({"type": "dict", "properties": {"x": {"type": "float"}, "t": {"type": "tuple", "items":
                        {"type": "String"}}}, "required": ["x", "nope"]}) == {
        "type": "object", "properties": {"x": {"type": "number"}, "t": {"type": "array", "items": {"type": "string"}}},
        "required": ["x"], "additionalProperties": False}


def test_extraction_prompts_carry_their_schema():
    p = load_suite("extraction", limit=1)[0]
    assert json.loads(p.schema)["required"] == ["module", "functions"] and "```python" in p.messages[-1]["content"]
