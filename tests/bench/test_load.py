"""The many-agents benchmark's parts (hvd/bench/load.py): its agents come from real data, a level
plays every agent through a live server with streaming, and the summary compares each answer
with the same server's solo answer."""
import sys
from pathlib import Path

import pytest

from hvd.bench import load
from hvd.bench.servers import Server
from hvd.data.episodes import Episode, chat_episodes

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from live_server import MODEL, live_server  # noqa: E402


def test_agents_mix_edits_tools_and_chats_from_the_held_out_splits():
    eps = load.agents(load.LoadConfig(edits=2, tools=2, chats=2))
    assert [e.kind for e in eps] == ["edit", "tools", "chat"] * 2
    chats = chat_episodes("eval", 3)
    assert all(len(e.turns) == 2 for e in chats)
    assert not {e.id for e in chat_episodes("train")} & {e.id for e in chat_episodes("eval")}


def test_a_level_plays_every_agent_and_answers_match_alone(tiny_exact_engine):
    eps = [Episode(f"chat:{c}", "chat", None, (f"{c}{c} {c}", f"{c} {c}{c}")) for c in "abcdef"]
    cfg = load.LoadConfig(max_tokens=10, tool_rounds=0)
    with live_server(tiny_exact_engine, method="ar") as url:
        from openai import OpenAI

        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        server = Server("hvd ar", url + "/v1", {"speculative": {"method": "hvd"}})
        runs = []
        for level in (1, 3, 6):
            load.reset(server, 6)
            runs.append(load.run_level(client, MODEL, server, eps, level, cfg))
    assert all(len(r["requests"]) == 12 and r["completion_tokens"] == 120 for r in runs)
    rows = load.summarize({"runs": runs})
    assert [r["differs"] for r in rows] == [0, 0, 0]
    assert all(r["ttft_p50"] > 0 and r["tpot_p50"] > 0 for r in rows)
    assert "| hvd ar | " in load.table(rows) and "(0)" in load.table(rows)
    assert all(r["tau"] >= 1.0 for r in rows)  # from the server's accepted-token counter
    assert set(rows[0]["by_kind"]) == {"chat"} and "chat tok/s" in load.kind_table(rows)


def test_the_summary_counts_answers_that_differ_from_the_servers_own_solo_answers():
    def run(level, texts, tps):
        return {"server": "peer", "concurrency": level, "tokens_per_second": tps, "tau": 2.0,
                "requests": [{"episode": "e", "i": i, "text": t, "ttft": 0.1, "tpot": 0.01, "kind": "edit" if i else "chat",
                              "completion_tokens": 8, "e2e": 2.0} for i, t in enumerate(texts)]}

    rows = load.summarize({"runs": [run(1, "abc", 10.0), run(4, "abd", 30.0), run(4, "xbc", 33.0), run(1, "abc", 9.0)]})
    assert [(r["concurrency"], r["tokens_per_second"], r["differs"]) for r in rows] == [(1, 10.0, 0), (4, 33.0, 1)]
    assert rows[0]["tau"] == 2.0 and rows[0]["by_kind"]["edit"] == 4.0


def test_apart_each_kind_and_level_plays_agents_of_its_own():
    plan = load.apart_plan(load.LoadConfig(levels=(1, 8), edits=2, tools=0, chats=3, apart=True))
    assert [(k, lv, len(e)) for k, lv, e in plan] == [("edit", 1, 2), ("edit", 8, 2), ("chat", 1, 3), ("chat", 8, 3)]
    ids = [e.id for _, _, eps in plan for e in eps]
    assert len(ids) == len(set(ids))  # no run repeats another's prompts
    with pytest.raises(RuntimeError, match="held-out episodes"):
        load.apart_plan(load.LoadConfig(levels=(1,), chats=10 ** 4, edits=0, tools=0, apart=True))


def test_apart_summary_is_the_median_over_rounds():
    def run(r, tps, text, tau=None):
        return {"server": "peer", "kind": "chat", "concurrency": 8, "round": r, "tokens_per_second": tps, "tau": tau,
                "requests": [{"episode": "e", "i": 0, "text": text}]}

    rows = load.summarize_apart({"runs": [run(0, 10.0, "a", 2.0), run(1, 30.0, "a", 3.0), run(2, 12.0, "b", 1.5)]})
    assert [(r["kind"], r["concurrency"], r["tokens_per_second"], r["tau"], r["differs"]) for r in rows] == \
        [("chat", 8, 12.0, 2.0, 1)]
    assert rows[0]["runs_tokens_per_second"] == [10.0, 30.0, 12.0]
    assert "| peer | 12.0 (τ 2.00) |" in load.apart_table(rows) and "chat x8" in load.apart_table(rows)


@pytest.mark.parametrize("kind", ["edit", "tools"])
def test_every_agent_kind_has_its_episodes(kind):
    cfg = load.LoadConfig(edits=1 if kind == "edit" else 0, tools=1 if kind == "tools" else 0, chats=0)
    assert [e.kind for e in load.agents(cfg)] == [kind]


def _chunk(delta: dict = None, usage: dict = None):
    from openai.types.chat import ChatCompletionChunk

    return ChatCompletionChunk.model_validate({
        "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}],
        **({"usage": usage} if usage else {})})


def test_tool_agents_offer_tools_and_answer_tool_calls_with_their_results():
    """With `tool_calls`, a BFCL agent sends its functions as `tools`, reads `delta.tool_calls`,
    runs each call on its backends and sends the result back with the call's id."""
    from types import SimpleNamespace

    from hvd.data.episodes import tool_episodes

    episode = tool_episodes("eval", 1)[0]
    assert episode.tools and all(t["type"] == "function" for t in episode.tools)
    assert "Initial state" in episode.tools_system and episode.tools[0]["function"]["parameters"]["type"] == "object"
    name = episode.tools[0]["function"]["name"]
    seen = []

    class Completions:
        def create(self, **kw):
            seen.append({**kw, "messages": [dict(m) for m in kw["messages"]]})  # as sent
            if len(seen) % 2:
                yield _chunk({"role": "assistant", "content": ""})
                yield _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                              "function": {"name": name, "arguments": "{}"}}]})
            else:
                yield _chunk({"content": "done"})
            yield _chunk(usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})

    client = SimpleNamespace(chat=SimpleNamespace(completions=Completions()))
    out = load.play(client, "m", Server("s", "u", {}), episode, load.LoadConfig(tool_calls="required", tool_rounds=1))
    assert seen[0]["tools"] == episode.tools and seen[0]["messages"][0]["content"] == episode.tools_system
    assert seen[0]["tool_choice"] == "required"
    history = seen[1]["messages"]
    assert history[-2]["role"] == "assistant" and history[-2]["tool_calls"][0]["function"]["name"] == name
    assert history[-1]["role"] == "tool" and history[-1]["tool_call_id"] == "call_1" and history[-1]["content"]
    assert out[0]["tool_calls"] == [{"id": "call_1", "name": name, "arguments": "{}"}] and out[1]["text"] == "done"
