"""The agent-loop benchmark's parts: call parsing, playing an episode through a live server
(tool rounds on BFCL backends, identical conversations for every method), /reset_stores, and
the summary."""
import sys
from pathlib import Path

import httpx
import pytest

from hvd.bench import agent
from hvd.bench.servers import Server
from hvd.data.episodes import Episode, edit_episodes, tool_episodes

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from live_server import MODEL, live_server  # noqa: E402


@pytest.mark.parametrize("text,calls", [
    ("[cd(folder='x'), ls(a=True)]", ["cd(folder='x')", "ls(a=True)"]),
    ("```python\n[add(a=1, b=2)]\n```", ["add(a=1, b=2)"]),
    ("mean(numbers=[1, 2])", ["mean(numbers=[1, 2])"]),
    ("I can't do that.", []),
    ("[x.y(1)]", []),  # only plain function names are calls to run
    ("[1, 2]", []),
    ("[broken(", []),
])
def test_parse_calls(text, calls):
    assert agent.parse_calls(text) == calls


def test_episodes_come_from_real_data():
    tools, edits = tool_episodes("eval", 2), edit_episodes("eval", 2)
    assert len(tools) == 2 and all(e.kind == "tools" and e.system and e.classes and e.turns for e in tools)
    assert all(b is not None for b in tools[0].backends())
    assert len(edits) == 2 and all(len(e.turns) == 2 and "```python" in e.turns[0] for e in edits)
    assert not {e.id for e in tool_episodes("train", 5)} & {e.id for e in tool_episodes("eval")}


@pytest.fixture(scope="module")
def url(tiny_exact_engine):
    with live_server(tiny_exact_engine, method="hvd") as u:
        yield u


def _client(url):
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_play_runs_tool_rounds_and_every_method_has_the_same_conversation(url, monkeypatch):
    calls = iter([["add(a=1, b=2)"]])
    monkeypatch.setattr(agent, "parse_calls", lambda text: next(calls, []))
    seen = []
    ep = Episode("tools:t", "tools", None, ("abc abc abc", "abd abd"), ("MathAPI",), "{}")
    cfg = agent.AgentBenchConfig(max_tokens=12)
    client = _client(url)
    real_create = client.chat.completions.create

    def create(**kw):
        seen.append([dict(m) for m in kw["messages"]])
        return real_create(**kw)

    monkeypatch.setattr(client.chat.completions, "create", create)
    r = agent.play(client, MODEL, Server("hvd ar", url + "/v1", {"speculative": {"method": "ar"}}), ep, cfg)
    assert [(q["turn"], q["round"]) for q in r["requests"]] == [(0, 0), (0, 1), (1, 0)]
    assert seen[1][-1] == {"role": "tool", "content": 'add(a=1, b=2) -> {"result": 3}'}
    assert all(q["decode_seconds"] >= 0 and q["completion_tokens"] > 0 for q in r["requests"])
    for method in ("suffix", "hvd"):
        calls = iter([["add(a=1, b=2)"]])
        other = agent.play(client, MODEL, Server(method, url + "/v1", {"speculative": {"method": method}}), ep, cfg)
        assert other["conversation"] == r["conversation"]


def test_reset_stores_empties_the_shared_store_in_place(url, tiny_exact_engine):
    client = _client(url)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "abc abc"}], max_tokens=8,
                                   temperature=0, extra_body={"speculative": {"method": "suffix"}})
    store = tiny_exact_engine.drafter("suffix").store
    assert store.tokens > 0
    r = httpx.post(url + "/reset_stores", json={})
    assert r.status_code == 200 and r.json()["stores"]["responses"] == 0
    assert tiny_exact_engine.drafter("suffix").store is store and store.tokens == 0 and store.index is None


def test_summary_speedups_are_per_episode_over_ar():
    def ep(eid, server, e2e, dec, toks, conv="c"):
        return {"episode": eid, "kind": "edit", "server": server, "e2e_seconds": e2e, "decode_seconds": dec,
                "completion_tokens": toks, "conversation": conv, "requests": []}

    report = {"servers": ["hvd ar", "hvd hvd cold"], "episodes": [
        ep("a", "hvd ar", 4.0, 2.0, 100), ep("a", "hvd hvd cold", 2.0, 1.0, 100),
        ep("b", "hvd ar", 6.0, 3.0, 100), ep("b", "hvd hvd cold", 5.0, 1.5, 100, conv="other")]}
    rows = {r["server"]: r for r in agent.summarize(report)}
    hvd = rows["hvd hvd cold"]
    assert hvd["e2e_speedup_per_episode"] == [2.0, 1.2]
    assert hvd["median_e2e_speedup"] == pytest.approx(1.6) and hvd["median_decode_speedup"] == pytest.approx(2.0)
    assert hvd["same_conversation_as_baseline"] is False and rows["hvd ar"]["same_conversation_as_baseline"]
    assert "| edit | hvd hvd cold | 2 |" in agent.table(agent.summarize(report))
