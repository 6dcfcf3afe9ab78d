"""Parsing and checking request bodies of the OpenAI endpoints into one `GenRequest`.

Every check names the offending parameter and raises `APIError` (400, or 404 for an unknown
model): the server never answers bad input with a 500.

Tools: hvd/serve/tools.py (the prompt, `tool_choice`, the calls read back). Structured output:
`response_format` {"type": "json_object"} (any JSON object) or {"type": "json_schema",
"json_schema": {"schema": ...}} is enforced by a grammar (hvd/constraints/grammar.py); a schema
feature the grammar engine does not support is a 400 that names it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from hvd.constraints.grammar import GrammarError, GrammarSpec
from hvd.serve import tools as tooling
from hvd.serve.errors import APIError, bad_request

DEFAULT_MAX_TOKENS = 1024  # when the request gives none (and the context window allows)
ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class GenRequest:
    kind: str  # "chat" | "completion"
    ids: tuple[int, ...]
    method: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: Optional[int]
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    max_draft_tokens: Optional[int]
    grammar: Optional[GrammarSpec] = None  # what the output must match (response_format, an enforced tool call)
    tools: Optional[tooling.Tools] = None  # the tools offered (a reply may be read as calls)


@dataclass(frozen=True)
class ServeContext:
    """What request parsing needs to know about the served model."""

    model_id: str
    methods: tuple[str, ...]  # what `speculative.method` may name
    default_method: str
    max_context: int
    encode_chat: Any  # messages -> token ids (the model's chat template)
    encode_text: Any  # text -> token ids (no template)
    unavailable: Mapping[str, str] = field(default_factory=dict)  # method -> why it cannot run here
    check_grammar: Any = None  # GrammarSpec -> None, GrammarError if this model cannot enforce it (None: unchecked)
    # the chat template has a tool format (hvd/chat_template.py): `encode_chat(messages, tools=...)`
    template_tools: bool = False


UNSUPPORTED = {"logprobs": "logprobs", "top_logprobs": "logprobs", "logit_bias": "logit_bias",
               "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
               "best_of": "best_of", "echo": "echo", "suffix": "suffix"}


def _number(body: dict, name: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad_request(f"'{name}' must be a number, got {type(v).__name__}", name)
    if isinstance(v, float) and not math.isfinite(v):
        raise bad_request(f"'{name}' must be a finite number, got {v}", name)
    if v < lo or v > hi or (lo_open and v == lo):
        raise bad_request(f"'{name}' must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}", name)
    return float(v)


def _int(value: Any, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer, got {type(value).__name__}", name)
    if value < lo:
        raise bad_request(f"'{name}' must be >= {lo}, got {value}", name)
    return value


def _common(body: dict, ctx: ServeContext) -> dict:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (a string)", "model")
    if model != ctx.model_id:
        raise APIError(404, f"model '{model}' does not exist; this server serves '{ctx.model_id}'",
                       param="model", code="model_not_found")
    for key, param in UNSUPPORTED.items():
        if body.get(key) not in (None, False, 0):
            raise bad_request(f"'{param}' is not supported by this server", param, "unsupported_parameter")
    n = body.get("n", 1)
    if n is not None and _int(n, "n", 1) != 1:
        raise bad_request("only n = 1 is supported", "n", "unsupported_parameter")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 16:
        raise bad_request("'stop' must be a non-empty string or a list of at most 16 non-empty strings", "stop")
    seed = body.get("seed")
    if seed is not None:
        seed = _int(seed, "seed", -(2 ** 63))
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise bad_request("'stream' must be a boolean", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    spec = body.get("speculative") or {}
    if not isinstance(spec, dict):
        raise bad_request("'speculative' must be an object like {\"method\": \"hvd\", \"max_draft_tokens\": 16}",
                          "speculative")
    extra = set(spec) - {"method", "max_draft_tokens"}
    if extra:
        raise bad_request(f"unknown key(s) in 'speculative': {', '.join(sorted(extra))}", "speculative")
    method = spec.get("method", ctx.default_method)
    if method not in ctx.methods:
        raise bad_request(f"unknown speculative method {method!r}; choose from: {', '.join(ctx.methods)}",
                          "speculative.method")
    if method in ctx.unavailable:
        raise bad_request(ctx.unavailable[method], "speculative.method", "method_unavailable")
    mdt = spec.get("max_draft_tokens")
    if mdt is not None:
        mdt = _int(mdt, "speculative.max_draft_tokens", 0)
    return dict(temperature=_number(body, "temperature", 1.0, 0.0, 2.0), top_p=_number(body, "top_p", 1.0, 0.0, 1.0, True),
                seed=seed, stop=tuple(stop), stream=bool(stream), include_usage=bool(opts.get("include_usage", False)),
                method=method, max_draft_tokens=mdt)


def _max_tokens(body: dict, prompt_len: int, ctx: ServeContext) -> int:
    if prompt_len >= ctx.max_context:
        raise bad_request(f"the prompt is {prompt_len} tokens; this model's context window is {ctx.max_context}",
                          "messages", "context_length_exceeded")
    room = ctx.max_context - prompt_len
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            n = _int(body[name], name, 1)
            if n > room:
                raise bad_request(f"'{name}' is {n}, but the prompt ({prompt_len} tokens) leaves room for {room} "
                                  f"in the context window of {ctx.max_context}", name, "context_length_exceeded")
            return n
    return min(DEFAULT_MAX_TOKENS, room)


def _content(m: dict, i: int) -> str:
    """A message's text (its `tool_calls` apart)."""
    c = m.get("content")
    if c is None:
        text = ""
    elif isinstance(c, str):
        text = c
    elif isinstance(c, list):
        parts = []
        for p in c:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise bad_request(f"messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                                  "are supported", f"messages[{i}].content")
            parts.append(p["text"])
        text = "".join(parts)
    else:
        raise bad_request(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")
    return text


def _message(m: dict, i: int, native: bool) -> dict:
    """One message for the chat template. An assistant turn's `tool_calls`: written after its
    content as the fallback prompt asks for calls, or (`native`: the template has a tool format)
    kept as calls whose arguments are objects, for the template to render; a `tool` turn keeps
    its `tool_call_id` (and `name`) for such a template."""
    role = "system" if m["role"] == "developer" else m["role"]
    out = {"role": role, "content": _content(m, i)}
    if m.get("tool_calls") is not None:
        if role != "assistant":
            raise bad_request(f"messages[{i}]: only an assistant turn has tool_calls", f"messages[{i}].tool_calls")
        calls = tooling.history_calls(m["tool_calls"], i)
        if native:
            out["tool_calls"] = [{"id": c.get("id") or f"call_{i}_{j}", "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for j, c in enumerate(calls)]
        else:
            text = tooling.render_calls(calls)
            out["content"] = f"{out['content']}\n{text}" if out["content"].strip() else text
    if native and role == "tool":
        out.update({k: m[k] for k in ("tool_call_id", "name") if isinstance(m.get(k), str)})
    return out


def chat_messages(body: dict, tools: Optional[tooling.Tools] = None, native: bool = False) -> list[dict]:
    """The request's messages for the chat template: {"role", "content"} strings, and the tools
    offered in a system message — unless `native` (the template has a tool format), where calls
    stay structured and the tools go to the template itself (`parse_chat`)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad_request(f"messages[{i}].role must be one of {', '.join(ROLES)}", f"messages[{i}].role")
        out.append(_message(m, i, native))
    if not any(m["content"].strip() or m.get("tool_calls") for m in out):
        raise bad_request("'messages' has no content", "messages")
    if tools is not None and tools.offered and not native:
        text = tooling.system_text(tools)
        if out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _response_format(body: dict) -> Optional[GrammarSpec]:
    """The grammar `response_format` asks for (None: text)."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return GrammarSpec.json_schema({"type": "object"})
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema", {}) if isinstance(spec, dict) else None
        if not isinstance(schema, dict) or not isinstance(spec.get("name", ""), str):
            raise bad_request("'response_format' json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": "
                              "{...}}}", "response_format.json_schema")
        return GrammarSpec.json_schema(schema)
    raise bad_request("'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                      "{\"type\": \"json_schema\", \"json_schema\": {...}}", "response_format")


def _grammar(body: dict, tools: Optional[tooling.Tools], ctx: ServeContext) -> Optional[GrammarSpec]:
    """What the output must match: an enforced tool call, or `response_format`; checked."""
    fmt = _response_format(body)
    call = tooling.call_grammar(tools) if tools is not None else None
    if fmt is not None and call is not None:
        raise bad_request("'response_format' cannot be combined with a required or named 'tool_choice'",
                          "response_format")
    spec, param = (call, "tools") if call is not None else (fmt, "response_format")
    if spec is not None and ctx.check_grammar is not None:
        try:
            ctx.check_grammar(spec)
        except GrammarError as e:
            raise bad_request(str(e), param, "unsupported_schema") from None
    return spec


def _apply_template(messages: list[dict], ctx: ServeContext, tools: Optional[tooling.Tools] = None) -> tuple[int, ...]:
    """The messages' token ids through the model's chat template (given `tools`' functions, which
    then has a tool format); a template that refuses them (jinja's `raise_exception`: roles that
    do not alternate, a system turn out of place, ...) is a 400 with its message."""
    try:
        if tools is not None:
            return tuple(ctx.encode_chat(messages, tools=[{"type": "function", "function": f} for f in tools.functions]))
        return tuple(ctx.encode_chat(messages))
    except Exception as e:  # the template is the model's code run on the client's input
        text = " ".join(str(e).split()) or type(e).__name__
        raise bad_request(f"the model's chat template rejected the messages: {text}", "messages") from None


def parse_chat(body: Any, ctx: ServeContext) -> GenRequest:
    common = _common(body, ctx)
    tools = tooling.parse_tools(body)
    grammar = _grammar(body, tools, ctx)
    native = ctx.template_tools and tools is not None and tools.offered
    ids = _apply_template(chat_messages(body, tools, ctx.template_tools), ctx, tools if native else None)
    return GenRequest("chat", ids, max_tokens=_max_tokens(body, len(ids), ctx), grammar=grammar,
                      tools=tools if tools is not None and tools.offered else None, **common)


def parse_completion(body: Any, ctx: ServeContext) -> GenRequest:
    common = _common(body, ctx)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("'prompt' must be a non-empty string (or a list of one)", "prompt")
    ids = tuple(ctx.encode_text(prompt))
    if not ids:
        raise bad_request("'prompt' encodes to no tokens", "prompt")
    if body.get("tools") is not None or body.get("tool_choice") is not None:
        raise bad_request("'tools' belong to chat completions (/v1/chat/completions)", "tools")
    return GenRequest("completion", ids, max_tokens=_max_tokens(body, len(ids), ctx), grammar=_grammar(body, None, ctx),
                      **common)
