"""Agents' interface through a live server and the official `openai` client: tool calls parsed
into `tool_calls` (streamed and not), a required or named choice forcing a valid call, a history
with calls and results, `response_format` enforced; invalid choices and unsupported schemas are
400s (hvd/serve/tools.py, hvd/serve/requests.py)."""
import json
import sys
from pathlib import Path

import httpx
import pytest

from conftest import char_tokenizer, tiny_llama
from hvd.constraints.grammar import GrammarSpec
from hvd.engine import Engine
from hvd.serve import tools as tooling

sys.path.insert(0, str(Path(__file__).parent))
from live_server import MODEL, live_server  # noqa: E402

WEATHER = {"type": "object", "properties": {"city": {"enum": ["paris", "rome", "oslo"]}, "days": {"type": "integer"}},
           "required": ["city", "days"], "additionalProperties": False}
CLOCK = {"type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"],
         "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "forecast", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "clock", "parameters": CLOCK}}]
ASK = [{"role": "user", "content": "weather in rome for 2 days?"}]
REPORT = {"type": "object", "properties": {"ok": {"type": "boolean"}, "items": {"type": "array", "maxItems": 3,
                                                                                  "items": {"enum": ["a", "bb"]}}},
          "required": ["ok", "items"], "additionalProperties": False}


def valid(doc, schema) -> bool:
    """`doc` against the few schema words these tests use."""
    if "enum" in schema:
        return doc in schema["enum"]
    kind = schema.get("type")
    if kind == "integer":
        return isinstance(doc, int) and not isinstance(doc, bool)
    if kind == "boolean":
        return isinstance(doc, bool)
    if kind == "array":
        return isinstance(doc, list) and len(doc) <= schema.get("maxItems", 10 ** 9) and \
            all(valid(x, schema["items"]) for x in doc)
    if kind == "object":
        props = schema.get("properties", {})
        return isinstance(doc, dict) and set(schema.get("required", [])) <= set(doc) and \
            (schema.get("additionalProperties", True) or set(doc) <= set(props)) and \
            all(valid(v, props[k]) for k, v in doc.items() if k in props)
    return True


@pytest.fixture(scope="module")
def engine() -> Engine:
    """A tiny Llama with room for a tools prompt (its characters' tokenizer), stopping at <eos>."""
    from hvd.targets.exact import ExactLlamaTarget

    return Engine(ExactLlamaTarget(tiny_llama(seed=4, max_position_embeddings=4096)), char_tokenizer())


@pytest.fixture(scope="module")
def url(engine):
    with live_server(engine, method="suffix") as url:
        yield url


@pytest.fixture()
def client(url):
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def schema_of(name: str) -> dict:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def check_calls(calls, names) -> None:
    assert calls, "no tool calls"
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_") and c.function.name in names
        assert valid(json.loads(c.function.arguments), schema_of(c.function.name)), c.function.arguments


@pytest.mark.parametrize("method", ["ar", "suffix"])
def test_a_required_call_is_a_valid_tool_call(client, method):
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=200,
                                       temperature=0, extra_body={"speculative": {"method": method}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    check_calls(choice.message.tool_calls, {"weather", "clock"})
    assert r.speculative["forced_tokens"] > 0  # the keys and quotes of a call, committed without a choice


def test_a_named_choice_calls_that_function_streamed_as_the_client_assembles_it(client):
    kw = dict(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=200, temperature=0,
              tool_choice={"type": "function", "function": {"name": "clock"}})
    whole = client.chat.completions.create(**kw).choices[0]
    check_calls(whole.message.tool_calls, {"clock"})
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(**kw, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        assert not delta.content  # a call is never streamed as text
        for tc in delta.tool_calls or []:
            c = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            c["id"] += tc.id or ""
            c["name"] += (tc.function.name or "") if tc.function else ""
            c["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and len(calls) == len(whole.message.tool_calls)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls]


def test_a_history_with_calls_and_results_round_trips(client, engine):
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                           max_tokens=200, temperature=0).choices[0].message
    call = first.tool_calls[0]
    history = ASK + [{"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 c"}]
    r = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=20, temperature=0,
                                       extra_body={"speculative": {"method": "ar"}})
    from hvd.serve.requests import chat_messages

    rendered = chat_messages({"messages": history}, tooling.parse_tools({"tools": TOOLS}))
    assert json.loads(rendered[2]["content"]) == [{"name": call.function.name,
                                                   "arguments": json.loads(call.function.arguments)}]
    assert rendered[3] == {"role": "tool", "content": "sunny, 21 c"}
    expected = engine.generate(rendered, method="ar", max_new_tokens=20).text
    got = r.choices[0].message
    assert (got.content if got.content is not None else "") == expected or got.tool_calls  # a reply, or calls again


def test_auto_offers_the_tools_in_a_system_message_and_answers_as_alone(client, engine):
    from hvd.serve.requests import chat_messages

    tools = tooling.parse_tools({"tools": TOOLS})
    msgs = chat_messages({"messages": ASK}, tools)
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith(tooling.PROMPT)
    assert '"name": "weather"' in msgs[0]["content"] and msgs[1:] == ASK
    assert chat_messages({"messages": ASK}, tooling.parse_tools({"tools": TOOLS, "tool_choice": "none"})) == ASK
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=12, temperature=0).choices[0]
    expected = engine.generate(msgs, method="ar", max_new_tokens=12).text
    assert r.message.content == expected and r.message.tool_calls is None  # a random model's text: no calls


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_and_json_object_outputs_parse_and_validate(client, stream):
    for fmt, schema in ((({"type": "json_schema", "json_schema": {"name": "report", "schema": REPORT,
                                                                   "strict": True}}), REPORT),
                        ({"type": "json_object"}, {"type": "object"})):
        kw = dict(model=MODEL, messages=ASK, response_format=fmt, max_tokens=300, temperature=0)
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kw, stream=True)
                           if c.choices)
        else:
            r = client.chat.completions.create(**kw)
            text = r.choices[0].message.content
            assert r.choices[0].finish_reason == "stop", text
        assert valid(json.loads(text), schema), text


BAD = [  # (body changes, words in the message)
    ({"tool_choice": "banana"}, "needs 'tools'"),
    ({"tools": TOOLS, "tool_choice": "banana"}, "'tool_choice' must be"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "teleport"}}}, "not in 'tools'"),
    ({"tools": TOOLS + TOOLS[:1]}, "twice"),
    ({"tools": [{"type": "function", "function": {"name": "x", "parameters": "nope"}}]}, "parameters"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "only an assistant turn"),
    ({"messages": ASK + [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "w"}}],
                          }], "tools": TOOLS}, None),  # arguments default to {}: accepted
    ({"messages": ASK + [{"role": "assistant", "content": None,
                          "tool_calls": [{"function": {"name": "w", "arguments": "[1]"}}]}]}, "arguments"),
    ({"response_format": {"type": "xml"}}, "'response_format' must be"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"not": {"type": "string"}}}}},
     "not"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object",
                                                                            "dependentSchemas": {"a": {}}}}}},
     "dependentSchemas"),
    ({"response_format": {"type": "json_object"}, "tools": TOOLS, "tool_choice": "required"}, "cannot be combined"),
    ({"tools": TOOLS, "parallel_tool_calls": "no"}, "'parallel_tool_calls' must be true or false"),
]


@pytest.mark.parametrize("change,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_invalid_choices_and_unsupported_schemas_are_400s(url, change, words):
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, **change}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    if words is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"], r.json()
    assert httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 2},
                      timeout=60).status_code == 200


@pytest.mark.parametrize("text,calls", [
    ('[{"name": "clock", "arguments": {"zone": "utc"}}]', [("clock", {"zone": "utc"})]),
    ('{"name": "clock", "arguments": {"zone": "cet"}}', [("clock", {"zone": "cet"})]),
    ("[weather(city='oslo', days=3), clock(zone='utc')]", [("weather", {"city": "oslo", "days": 3}),
                                                           ("clock", {"zone": "utc"})]),
    ("```python\n[clock(zone='utc')]\n```", [("clock", {"zone": "utc"})]),
    ('<tool_call>{"name": "clock", "arguments": {"zone": "utc"}}</tool_call>\n'
     '<tool_call>{"name": "weather", "arguments": {"city": "rome", "days": 1}}</tool_call>',
     [("clock", {"zone": "utc"}), ("weather", {"city": "rome", "days": 1})]),  # a ChatML template's format
    ('{"name": "clock", "parameters": {"zone": "utc"}}', [("clock", {"zone": "utc"})]),  # Llama 3.1's word
    ('Sure: <tool_call>{"name": "clock", "arguments": {}}</tool_call>', None),  # text beside the tags
    ('<tool_call>{"name": "clock"', None),  # cut short
    ("[teleport(to='mars')]", None),  # not a function of the request
    ("It is sunny.", None),
    ("[1, 2]", None),
])
def test_replies_are_read_as_calls_only_when_they_are_calls(text, calls):
    got = tooling.read_calls(text, tooling.parse_tools({"tools": TOOLS}))
    assert (None if got is None else [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                                      for c in got]) == calls
    assert tooling.read_calls(text, tooling.parse_tools({"tools": TOOLS, "tool_choice": "none"})) is None


def test_without_parallel_calls_one_call_is_read_and_enforced():
    one = tooling.parse_tools({"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False})
    got = tooling.read_calls('[{"name": "clock", "arguments": {"zone": "utc"}}, '
                             '{"name": "clock", "arguments": {"zone": "cet"}}]', one)
    assert [json.loads(c["function"]["arguments"]) for c in got] == [{"zone": "utc"}]
    assert json.loads(tooling.call_grammar(one).source)["maxItems"] == 1
    assert "maxItems" not in json.loads(tooling.call_grammar(tooling.parse_tools(
        {"tools": TOOLS, "tool_choice": "required"})).source)


def test_the_call_grammar_of_a_named_choice_is_that_function_alone():
    spec = tooling.call_grammar(tooling.parse_tools({"tools": TOOLS, "tool_choice": {"type": "function",
                                                                                     "function": {"name": "clock"}}}))
    schema = json.loads(spec.source)
    assert isinstance(spec, GrammarSpec) and schema["items"]["properties"]["name"] == {"const": "clock"}
    assert tooling.call_grammar(tooling.parse_tools({"tools": TOOLS})) is None  # auto: not enforced


# ---- a chat template with a tool format (hvd/chat_template.py, examples/chatml-tools.jinja) ----

TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "chatml-tools.jinja"


@pytest.fixture(scope="module")
def native_engine() -> Engine:
    """The tiny Llama whose tokenizer has a ChatML template that reads `tools`."""
    from hvd import chat_template
    from hvd.targets.exact import ExactLlamaTarget

    tok = char_tokenizer()
    chat_template.install(tok, chat_template.read_template(TEMPLATE))
    return Engine(ExactLlamaTarget(tiny_llama(seed=4, max_position_embeddings=4096)), tok)


def test_a_template_with_a_tool_format_gets_the_tools_and_structured_calls(native_engine):
    from hvd.serve.requests import ServeContext, chat_messages, parse_chat

    assert native_engine.template_tools
    seen = []
    ctx = ServeContext(MODEL, ("ar",), "ar", 4096, lambda m, **kw: seen.append((m, kw)) or [1, 2, 3], None,
                       template_tools=True)
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "rome", "days": 2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    parse_chat({"model": MODEL, "messages": history, "tools": TOOLS}, ctx)
    messages, kw = seen[-1]
    assert kw == {"tools": TOOLS} and messages[0] == ASK[0]  # no fallback system prompt
    assert messages[1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": {"city": "rome", "days": 2}}
    assert messages[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    parse_chat({"model": MODEL, "messages": ASK, "tools": TOOLS, "tool_choice": "none"}, ctx)
    assert seen[-1] == (ASK, {})  # none: the template is not given the tools
    text = native_engine.tokenizer.apply_chat_template(chat_messages({"messages": history}, native=True),
                                                       tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert "<tools>" in text and '"name": "clock"' in text
    assert '<tool_call>{"name": "weather", "arguments": {"city": "rome", "days": 2}}</tool_call>' in text
    assert "<tool_response>sunny</tool_response>" in text


def test_through_a_live_server_a_tool_format_template_forces_and_round_trips_calls(native_engine):
    from openai import OpenAI

    with live_server(native_engine, method="suffix") as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=200, temperature=0,
                                               tool_choice="required", parallel_tool_calls=False).choices[0]
        assert first.finish_reason == "tool_calls" and len(first.message.tool_calls) == 1  # one call: its grammar
        check_calls(first.message.tool_calls, {"weather", "clock"})
        call = first.message.tool_calls[0]
        history = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                         {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 c"}]
        r = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=12, temperature=0,
                                           extra_body={"speculative": {"method": "ar"}})
        ids = native_engine.encode([{**m, "content": m["content"] or ""} if m["role"] != "assistant" else
                                    {"role": "assistant", "content": "", "tool_calls": [
                                        {"id": call.id, "type": "function", "function": {
                                            "name": call.function.name,
                                            "arguments": json.loads(call.function.arguments)}}]}
                                    for m in history], tools=TOOLS)
        assert r.usage.prompt_tokens == len(ids)  # the template rendered the calls and the result
