"""Tool calls in the OpenAI shape: `tools` and `tool_choice` checked, the model told about the
tools, its calls read back into `tool_calls`, and a required or named call enforced by a grammar.

The prompt: where the model's chat template has a tool format (it reads `tools`:
hvd/chat_template.py; `hvd serve --chat-template` gives a model one) the template gets the
request's functions and renders the history's calls and tool results itself. Where it has none
(the default models') the tools go into a system message that lists each function's JSON schema
and asks for calls as a JSON array, ``[{"name": "<function>", "arguments": {...}}]`` (`PROMPT`),
and the history's calls are written after their turn's content in that form. A reply is read as
calls when it is such an array or one such object ("parameters" for "arguments" too), calls in
``<tool_call>...</tool_call>`` tags (the ChatML tool format), or a Python-style list of calls
(``[f(a=1), g()]``, the form BFCL's prompts ask for), naming only the request's functions;
otherwise it is text content.

`tool_choice`: "none" leaves the tools out of the prompt and never reads calls; "auto" (the
default) lets the model choose; "required" and a named function constrain the reply to a JSON
array of valid calls, whatever the template's own format (of any of the functions, or of that
one), whose arguments match each function's `parameters` schema: the grammar that enforces it is
compiled like any other (`hvd.constraints.grammar`). A choice that names no function of `tools`,
a choice that is not one of those four, or one given without tools, is a 400.
`parallel_tool_calls: false` allows one call a reply: an enforced choice's grammar takes one,
and of a reply with more calls only the first is read.
"""
from __future__ import annotations

import ast
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from hvd.constraints.calls import calls_schema
from hvd.constraints.grammar import GrammarSpec
from hvd.serve.errors import bad_request

PROMPT = ("You can call the following functions. To call one or more, reply with only a JSON array of calls: "
          '[{"name": "<function name>", "arguments": {<arguments>}}].\n')
CHOICES = ("none", "auto", "required")
TAG = "<tool_call>"
TAGGED = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class Tools:
    functions: tuple[dict, ...]  # each {"name", "description"?, "parameters"?}
    choice: str  # "none" | "auto" | "required" | "named"
    named: Optional[str] = None  # the function a named choice requires
    parallel: bool = True  # `parallel_tool_calls`: false = at most one call a reply

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
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise bad_request("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    if choice is None or choice in CHOICES:
        return Tools(tuple(functions), choice or "auto", parallel=parallel)
    named = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not (isinstance(choice, dict) and choice.get("type", "function") == "function" and isinstance(named, str)):
        raise bad_request("'tool_choice' must be \"none\", \"auto\", \"required\" or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
    if named not in names:
        raise bad_request(f"'tool_choice' names the function {named!r}, which is not in 'tools' "
                          f"({', '.join(names)})", "tool_choice")
    return Tools(tuple(functions), "named", named, parallel)


def system_text(tools: Tools) -> str:
    """What the model is told about the tools (the fallback prompt)."""
    text = PROMPT + "\n".join(json.dumps(f) for f in tools.functions)
    if not tools.parallel:
        text += "\nCall at most one function at a time."
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
    return GrammarSpec.json_schema(calls_schema(chosen, None if tools.parallel else 1))


def read_calls(text: str, tools: Tools) -> Optional[list[dict]]:
    """The reply's calls in the OpenAI shape, or None where the reply is not calls of `tools`."""
    if not tools.offered:
        return None
    pairs = _tagged_calls(text)
    if pairs is None:
        pairs = _json_calls(text)
    if pairs is None:
        pairs = _python_calls(text)
    if not pairs or any(name not in tools.names for name, _ in pairs):
        return None
    pairs = pairs if tools.parallel else pairs[:1]  # one call a reply: the first
    return [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
             "function": {"name": name, "arguments": json.dumps(args)}} for name, args in pairs]


def _tagged_calls(text: str) -> Optional[list[tuple[str, dict]]]:
    """Calls in tags, each `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the format of
    ChatML templates with tools), nothing else in the reply but white space."""
    blocks = TAGGED.findall(text)
    if not blocks or TAGGED.sub("", text).strip():
        return None
    out = []
    for block in blocks:
        calls = _json_calls(block)
        if calls is None or len(calls) != 1:
            return None
        out += calls
    return out


def _json_calls(text: str) -> Optional[list[tuple[str, dict]]]:
    """A JSON array of calls, or one call; each {"name", "arguments"} ("parameters" too, the word
    of Llama 3.1's format)."""
    try:
        doc = json.loads(_unfenced(text))
    except ValueError:
        return None
    doc = [doc] if isinstance(doc, dict) else doc
    if not isinstance(doc, list) or not doc:
        return None
    out = []
    for c in doc:
        args = c.get("arguments", c.get("parameters", {})) if isinstance(c, dict) else None
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(args, dict):
            return None
        out.append((c["name"], args))
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


def history_calls(calls: Any, i: int) -> list[dict]:
    """messages[i]'s `tool_calls`, checked: each {"id" (or None), "name", "arguments" (an object)}."""
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
        call_id = c.get("id")
        out.append({"id": call_id if isinstance(call_id, str) else None, "name": name, "arguments": args})
    return out


def render_calls(calls: list[dict]) -> str:
    """Checked calls (`history_calls`) as the fallback prompt asks the model to write them."""
    return json.dumps([{"name": c["name"], "arguments": c["arguments"]} for c in calls])
