"""BFCL v4 (the ``bfcl_eval`` package) as a data source: the agentic-tools and structured suites,
and the calls of a BFCL conversation run on BFCL's own simulated backends (`run_tool_call`).

  agentic-tools  multi-turn tool use (multi_turn_base, _miss_param, _miss_func): the system
                 prompt holds the involved classes' function schemas and the initial
                 environment state; earlier turns carry the ground-truth calls (possible_answer
                 files) and their results, obtained by running the calls on the simulated
                 backends, as an agent loop would. Split key ``bfcl-multi-turn:<scenario
                 number>``, so all categories and turns of one scenario land together.
  structured     single-turn function calling (simple_python, parallel, multiple,
                 parallel_multiple): schemas in the system prompt, answer as a JSON call; each
                 prompt carries the JSON schema of a valid answer (`call_schema`: a list of
                 calls of its functions, arguments per BFCL's parameter schemas).
"""
from __future__ import annotations

import ast
import copy
import functools
import importlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from hvd.constraints.calls import calls_schema
from hvd.data.prompts import Item, Prompt, estimate_tokens, interleave, make_prompt, package_dir, read_jsonl

TOOLS_MAX_NEW_TOKENS = 128
STRUCTURED_MAX_NEW_TOKENS = 128
TOOLS_MAX_PROMPT_TOKENS = 6000  # estimated; leaves room for the reply in an 8k context

_BFCL_BACKENDS = {  # class -> (simulated backend module, function-doc file)
    "GorillaFileSystem": ("gorilla_file_system", "gorilla_file_system.json"),
    "MathAPI": ("math_api", "math_api.json"),
    "MessageAPI": ("message_api", "message_api.json"),
    "TwitterAPI": ("posting_api", "posting_api.json"),
    "TicketAPI": ("ticket_api", "ticket_api.json"),
    "TradingBot": ("trading_bot", "trading_bot.json"),
    "TravelAPI": ("travel_booking", "travel_booking.json"),
    "VehicleControlAPI": ("vehicle_control", "vehicle_control.json"),
}
_BFCL_BACKEND_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
_STATELESS_BACKENDS = frozenset({"MathAPI"})
_MULTI_TURN_CATEGORIES = ("base", "miss_param", "miss_func")
STRUCTURED_CATEGORIES = ("simple_python", "parallel", "multiple", "parallel_multiple")

_TOOLS_SYSTEM = (
    "You are an assistant that completes the user's requests by calling functions. To call functions, "
    "reply with only a Python-style list of calls, such as [func_a(x=1, y='two'), func_b(z=[3])], and "
    "nothing else; you will then be given their results. If a request cannot be done with the available "
    "functions, or a value it needs is missing, say so in plain words instead.\n\n"
    "Available functions (JSON schemas, one a line):\n{functions}\n\n"
    "Initial state of the environment (JSON):\n{state}"
)
_ADDED_FUNCTIONS = "These functions are now available too (JSON schemas, one a line):\n{functions}\nPlease go on with my request."
_NO_CALL_REPLY = "I can't do that with the available functions and the information given. What is missing?"
_TOOLS_API_SYSTEM = (  # the functions themselves come as the request's `tools` (scenario_tools)
    "You are an assistant that completes the user's requests by calling the functions you are given; you "
    "will then be given their results. If a request cannot be done with the available functions, or a value "
    "it needs is missing, say so in plain words instead.\n\n"
    "Initial state of the environment (JSON):\n{state}"
)

_STRUCTURED_SYSTEM = (
    "You can call these functions, given as JSON schemas (one a line):\n{functions}\n\n"
    'Answer with only a JSON list of the function calls that fulfil the user\'s request, each written as '
    '{{"name": "<function name>", "arguments": {{"<parameter>": <value>, ...}}}}, and no other text.'
)


def _bfcl_data() -> Path:
    return package_dir("bfcl_eval") / "data"


def _dumps(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False, separators=(", ", ": "))


def multi_turn_rows(category: str) -> list[dict]:
    """The scenarios of a multi-turn category ("base", "miss_param", "miss_func"), in file order."""
    return read_jsonl(_bfcl_data() / f"BFCL_v4_multi_turn_{category}.json")


def _scenario_number(row: dict) -> str:
    return row["id"].rsplit("_", 1)[-1]


def split_key(row: dict) -> str:
    """A multi-turn scenario's split key: its number, the same in every category."""
    return f"bfcl-multi-turn:{_scenario_number(row)}"


def _compact_doc(doc: dict) -> dict:
    """A function's schema without BFCL's per-class preamble and response schema (repeated text, costly in tokens)."""
    description = str(doc.get("description", "")).split("Tool description: ")[-1]
    return {"name": doc["name"], "description": description, "parameters": doc.get("parameters", {})}


@functools.lru_cache(maxsize=1)
def _func_docs() -> dict[str, tuple[dict, ...]]:
    folder = _bfcl_data() / "multi_turn_func_doc"
    return {cls: tuple(_compact_doc(d) for d in read_jsonl(folder / doc)) for cls, (_, doc) in _BFCL_BACKENDS.items()}


def _schema_lines(docs: Iterable[dict]) -> str:
    return "\n".join(_dumps(d) for d in docs)


def backend(cls: str, config: dict) -> Any:
    """A fresh BFCL simulated backend in the scenario's initial state; None if it cannot be loaded."""
    try:
        obj = getattr(importlib.import_module(f"{_BFCL_BACKEND_PACKAGE}.{_BFCL_BACKENDS[cls][0]}"), cls)()
        if cls not in _STATELESS_BACKENDS:
            obj._load_scenario(copy.deepcopy(config.get(cls, {})))
        return obj
    except Exception:  # e.g. a backend's optional dependency is missing
        return None


def run_tool_call(call: str, backends: Sequence[Any]) -> str:
    """Run one call like ``cd(folder='x')`` on BFCL backends; its result (or error) as text."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            return "Error: not a function call"
        owner = next((b for b in backends if b is not None and hasattr(b, node.func.id)), None)
        if owner is None:
            return f"Error: function {node.func.id} is not available"
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        result = getattr(owner, node.func.id)(*args, **kwargs)
    except Exception as e:  # an error is a result the agent sees, as in BFCL's own loop
        return f"Error during execution: {e}"
    return result if isinstance(result, str) else json.dumps(result, default=str)


def _turn_reply(calls: list[str], results: list[str]) -> list[tuple[str, str]]:
    if not calls:
        return [("assistant", _NO_CALL_REPLY)]
    listing = "\n".join(f"{c} -> {r}" for c, r in zip(calls, results))
    return [("assistant", f"[{', '.join(calls)}]"), ("tool", listing)]


def turn_request(question: list[dict], added: list[dict]) -> str:
    """A user turn's text: its messages, or, at a turn where functions are added, the added schemas."""
    if added:
        return _ADDED_FUNCTIONS.format(functions=_schema_lines(added))
    return "\n".join(m["content"] for m in question) or "Please go on."


def _first_new_turn(row: dict, base: Optional[dict]) -> int:
    """Turns before this one are identical to the base scenario's (and so left out as duplicates)."""
    if base is None:
        return 0
    q, b = row["question"], base["question"]
    return next((t for t in range(len(q)) if t >= len(b) or q[t] != b[t]), len(q))


def scenario_start(row: dict) -> tuple[str, dict[int, list[dict]]]:
    """(system prompt, {turn: schemas added at that turn}) of a multi-turn scenario.

    The system prompt shows the schemas available from the start and the initial state. BFCL's
    excluded functions are never shown; miss_func's missed functions appear only at their turn.
    """
    excluded = set(row.get("excluded_function", []))
    docs = [d for c in row["involved_classes"] for d in _func_docs()[c] if d["name"] not in excluded]
    missed = {int(t): set(names) for t, names in row.get("missed_function", {}).items()}
    late = set().union(*missed.values())
    shown = [d for d in docs if d["name"] not in late]
    system = _TOOLS_SYSTEM.format(functions=_schema_lines(shown), state=_dumps(row["initial_config"]))
    return system, {t: [d for d in docs if d["name"] in n] for t, n in missed.items()}


def scenario_tools(row: dict) -> tuple[str, list[dict]]:
    """(system prompt, OpenAI `tools`) of a multi-turn scenario for a client that offers its
    functions as tools: the functions shown from the start (as `scenario_start`), parameters as
    standard JSON schema; the system prompt holds the initial state."""
    excluded = set(row.get("excluded_function", []))
    late = set().union(*(set(n) for n in row.get("missed_function", {}).values()))
    docs = [d for c in row["involved_classes"] for d in _func_docs()[c] if d["name"] not in excluded | late]
    tools = [{"type": "function", "function": {"name": d["name"], "description": d.get("description", ""),
                                               "parameters": json_schema(d.get("parameters", {"type": "dict"}))}}
             for d in docs]
    return _TOOLS_API_SYSTEM.format(state=_dumps(row["initial_config"])), tools


def call_text(name: str, arguments: dict) -> str:
    """A call in the Python form BFCL's backends run (`run_tool_call`)."""
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")"


def _scenario_prompts(category: str, row: dict, truth: list[list[str]], base: Optional[dict]) -> list[Prompt]:
    """One prompt per turn (from the first turn not shared with the base scenario) of a BFCL multi-turn scenario."""
    system, added = scenario_start(row)
    backends = [backend(c, row["initial_config"]) for c in row["involved_classes"]]
    turns: list[tuple[str, str]] = [("system", system)]
    out, first, size = [], _first_new_turn(row, base), estimate_tokens(system)
    for t, (question, calls) in enumerate(zip(row["question"], truth)):
        request = turn_request(question, added.get(t, []))
        turns.append(("user", request))
        if t >= first and size + estimate_tokens(request) <= TOOLS_MAX_PROMPT_TOKENS:
            pid = f"agentic-tools:{row['id']}:turn{t}"
            out.append(make_prompt(pid, f"bfcl-multi_turn_{category}", TOOLS_MAX_NEW_TOKENS, *turns))
        reply = _turn_reply(calls, [run_tool_call(c, backends) for c in calls])
        turns += reply
        size += sum(estimate_tokens(c) for _, c in [("user", request), *reply])
    return out


def agentic_tools_items() -> tuple[Item, ...]:
    """The agentic-tools suite, scenario by scenario (split key ``bfcl-multi-turn:<number>``)."""
    data = _bfcl_data()
    scenarios = {}
    for category in _MULTI_TURN_CATEGORIES:
        rows = multi_turn_rows(category)
        truth = {a["id"]: a["ground_truth"] for a in read_jsonl(data / "possible_answer" / f"BFCL_v4_multi_turn_{category}.json")}
        scenarios[category] = [(_scenario_number(r), r, truth[r["id"]]) for r in rows]
    base = {number: row for number, row, _ in scenarios["base"]}
    items: list[Item] = []
    for category in _MULTI_TURN_CATEGORIES:
        for number, row, truth in scenarios[category]:
            reference = None if category == "base" else base.get(number)
            items += [(split_key(row), p) for p in _scenario_prompts(category, row, truth, reference)]
    items.sort(key=lambda item: int(item[0].rsplit(":", 1)[-1]))  # stable: scenario by scenario
    return tuple(items)


def structured_items() -> tuple[Item, ...]:
    """The structured suite, the categories interleaved (split key: the prompt id)."""
    groups = []
    for category in STRUCTURED_CATEGORIES:
        group = []
        for row in read_jsonl(_bfcl_data() / f"BFCL_v4_{category}.json"):
            system = _STRUCTURED_SYSTEM.format(functions=_schema_lines(row["function"]))
            turns = [("system", system)] + [(m["role"], m["content"]) for m in row["question"][0]]
            pid = f"structured:{row['id']}"
            prompt = make_prompt(pid, f"bfcl-{category}", STRUCTURED_MAX_NEW_TOKENS, *turns)
            group.append((pid, replace(prompt, schema=json.dumps(call_schema(row["function"])))))
        groups.append(group)
    return tuple(interleave(*groups))


_TYPES = {"dict": "object", "float": "number", "tuple": "array", "list": "array", "String": "string",
          "str": "string", "int": "integer", "bool": "boolean", "integer": "integer", "number": "number",
          "string": "string", "boolean": "boolean", "array": "array", "object": "object"}


def json_schema(param: Any) -> dict:
    """A BFCL parameter schema as standard JSON schema ("dict" -> "object", "float" -> "number",
    "tuple" -> "array", "any" -> anything; descriptions and defaults dropped)."""
    if not isinstance(param, dict):
        return {}
    out: dict = {}
    kind = _TYPES.get(param.get("type"))
    if kind is not None:
        out["type"] = kind
    if "enum" in param:
        out["enum"] = list(param["enum"])
        out.pop("type", None)  # BFCL's enums sometimes disagree with its types
    if kind == "object" and isinstance(param.get("properties"), dict):
        out["properties"] = {k: json_schema(v) for k, v in param["properties"].items()}
        out["required"] = [r for r in param.get("required", []) if r in out["properties"]]
        out["additionalProperties"] = False
    if kind == "array" and isinstance(param.get("items"), dict):
        out["items"] = json_schema(param["items"])
    return out


def call_schema(functions: Sequence[dict]) -> dict:
    """The JSON schema of an answer that is a list of calls of BFCL `functions`."""
    return calls_schema([(f["name"], json_schema(f.get("parameters", {"type": "dict"}))) for f in functions])
