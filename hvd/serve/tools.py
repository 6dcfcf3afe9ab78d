"""Tool calls in the OpenAI shape: `tools` and `tool_choice` checked, the model told about the
tools, its calls read back into `tool_calls`, and a required or named call enforced by a grammar.

The prompt: where the model's chat template has no tool format (the default model's has none)
the tools go into a system message that lists each function's JSON schema and asks for calls
as a JSON array, ``[{"name": "<function>", "arguments": {...}}]`` (`PROMPT`). A reply is read as
calls when it is such an array, or a Python-style list of calls (``[f(a=1), g()]``, the form
BFCL's prompts ask for), naming only the request's functions; otherwise it is text content.

`tool_choice`: "none" leaves the tools out of the prompt and never reads calls; "auto" (the
default) lets the model choose; "required" and a named function constrain the reply to a JSON
array of valid calls (of any of the functions, or of that one) whose arguments match each
function's `parameters` schema: the grammar that enforces it is compiled like any other
(`hvd.constraints.grammar`). A choice that names no function of `tools`, a choice that is not one
of those four, or one given without tools, is a 400.
"""
from __future__ import annotations

import ast
import json
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from hvd.constraints.calls import calls_schema
from hvd.constraints.grammar import GrammarSpec
from hvd.serve.errors import bad_request

PROMPT = ("You can call the following functions. To call one or more, reply with only a JSON array of calls: "
          '[{"name": "<function name>", "arguments": {<arguments>}}].\n')
CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class Tools:
    functions: tuple[dict, ...]  # each {"name", "description"?, "parameters"?}
    choice: str  # "none" | "auto" | "required" | "named"
    named: Optional[str] = None  # the function a named choice requires

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.functions)

    @property
    def offered(self) -> bool:
        """The model is told about the tools, and its reply may be calls."""
        return self.choice != "none"

    @property
    def enforced(self) -> bool:
        return self.choice in ("required", "named")


def parse_tools(body: dict) -> Optional[Tools]:
    """The request's tools and tool choice, checked (None: no tools)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none", "auto"):
            raise bad_request("'tool_choice' needs 'tools': no function is offered", "tool_choice")
        return None
    if not isinstance(tools, list) or not tools:
        raise bad_request("'tools' must be a non-empty list of function tools", "tools")
    functions = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad_request(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                              f"tools[{i}]")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise bad_request(f"tools[{i}].function.parameters must be a JSON schema object",
                              f"tools[{i}].function.parameters")
        functions.append({k: fn[k] for k in ("name", "description") if k in fn} | {"parameters": params})
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        raise bad_request("'tools' names a function twice", "tools")
    if choice is None or choice in CHOICES:
        return Tools(tuple(functions), choice or "auto")
    named = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not (isinstance(choice, dict) and choice.get("type", "function") == "function" and isinstance(named, str)):
        raise bad_request("'tool_choice' must be \"none\", \"auto\", \"required\" or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
    if named not in names:
        raise bad_request(f"'tool_choice' names the function {named!r}, which is not in 'tools' "
                          f"({', '.join(names)})", "tool_choice")
    return Tools(tuple(functions), "named", named)


def system_text(tools: Tools) -> str:
    """What the model is told about the tools (the fallback prompt)."""
    text = PROMPT + "\n".join(json.dumps(f) for f in tools.functions)
    if tools.choice == "required":
        text += "\nYou must call at least one function."
    elif tools.choice == "named":
        text += f"\nYou must call the function {tools.named}."
    return text


def call_grammar(tools: Tools) -> Optional[GrammarSpec]:
    """The grammar a required or named choice constrains the reply to (None: not enforced)."""
    if not tools.enforced:
        return None
    chosen = [(f["name"], f["parameters"]) for f in tools.functions
              if tools.choice == "required" or f["name"] == tools.named]
    return GrammarSpec.json_schema(calls_schema(chosen))


def read_calls(text: str, tools: Tools) -> Optional[list[dict]]:
    """The reply's calls in the OpenAI shape, or None where the reply is not calls of `tools`."""
    if not tools.offered:
        return None
    pairs = _json_calls(text)
    if pairs is None:
        pairs = _python_calls(text)
    if not pairs or any(name not in tools.names for name, _ in pairs):
        return None
    return [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
             "function": {"name": name, "arguments": json.dumps(args)}} for name, args in pairs]


def _json_calls(text: str) -> Optional[list[tuple[str, dict]]]:
    try:
        doc = json.loads(_unfenced(text))
    except ValueError:
        return None
    doc = [doc] if isinstance(doc, dict) else doc
    if not isinstance(doc, list) or not doc:
        return None
    out = []
    for c in doc:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("arguments", {}), dict):
            return None
        out.append((c["name"], c.get("arguments", {})))
    return out


def _python_calls(text: str) -> Optional[list[tuple[str, dict]]]:
    try:
        node = ast.parse(_unfenced(text), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None
    items = node.elts if isinstance(node, ast.List) else [node]
    out = []
    for c in items:
        if not (isinstance(c, ast.Call) and isinstance(c.func, ast.Name)) or c.args:
            return None
        try:
            out.append((c.func.id, {k.arg: ast.literal_eval(k.value) for k in c.keywords if k.arg}))
        except (ValueError, SyntaxError, RecursionError):
            return None
    if not all(_jsonable(args) for _, args in out):
        return None
    return out


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _unfenced(text: str) -> str:
    text = text.strip()
    for fence in ("```json", "```python", "```"):
        text = text.removeprefix(fence)
    return text.removesuffix("```").strip()


def render_calls(calls: Any, i: int) -> str:
    """An assistant turn's `tool_calls`, as the model is asked to write them (history)."""
    if not isinstance(calls, list) or not calls:
        raise bad_request(f"messages[{i}].tool_calls must be a non-empty list", f"messages[{i}].tool_calls")
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        args = fn.get("arguments", "{}") if isinstance(fn, dict) else None
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            args = None
        if not isinstance(name, str) or not isinstance(args, dict):
            raise bad_request(f"messages[{i}].tool_calls: each needs function.name and function.arguments "
                              "(a JSON object, or its text)", f"messages[{i}].tool_calls")
        out.append({"name": name, "arguments": args})
    return json.dumps(out)
