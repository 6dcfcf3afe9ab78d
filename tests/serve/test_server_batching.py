"""`hvd serve` decoding many requests together (continuous batching), on a live server through
the official `openai` client: every answer is its solo answer at any concurrency, requests join
and leave mid-way, the KV budget holds, and an agent's next turn prefills only its new tokens."""
from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

from hvd.engine import Request
from hvd.serve.app import ServeConfig

from live_server import MODEL, SlowEngine, live_server, logged_errors

DELAY = 0.01  # seconds added to every step, so requests overlap


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def prompt(i: int) -> list[dict]:
    c = "abcdefghijkl"[i % 12]
    return [{"role": "user", "content": f"{c}{c} {c} {i} {c}{c}{c} {i}"}]


def metric(url: str, sample: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("max_batch", [4, 16])
def test_concurrent_requests_each_get_their_solo_answer(tiny_exact_engine, max_batch):
    """16 clients at once, mixed methods, greedy and seeded sampling, 6 to 40 new tokens (so they
    join and leave mid-way), streamed and not: each answer is the one the engine gives alone, and
    the server ran up to `max_batch` of them together."""
    methods = ("ar", "suffix", "pld", "hvd")
    cases = [dict(messages=prompt(i), max_tokens=6 + 34 * (i % 3) // 2, method=methods[i % 4],
                  temperature=0.0 if i % 3 else 0.8, seed=i, stream=bool(i % 2)) for i in range(16)]
    want = [tiny_exact_engine.generate(c["messages"], method="ar", max_new_tokens=c["max_tokens"],
                                       temperature=c["temperature"], seed=c["seed"]).text for c in cases]
    with live_server(SlowEngine(tiny_exact_engine, DELAY), ServeConfig(max_batch=max_batch)) as url:
        with logged_errors() as errors:
            api = client(url)

            def one(c) -> str:
                kw = dict(model=MODEL, messages=c["messages"], max_tokens=c["max_tokens"],
                          temperature=c["temperature"], seed=c["seed"],
                          extra_body={"speculative": {"method": c["method"]}})
                if not c["stream"]:
                    return api.chat.completions.create(**kw).choices[0].message.content
                chunks = api.chat.completions.create(**kw, stream=True)
                return "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)

            seen = []
            with cf.ThreadPoolExecutor(16) as pool:
                futures = [pool.submit(one, c) for c in cases]
                while not all(f.done() for f in futures):
                    seen.append(metric(url, "hvd:num_requests_running"))
            got = [f.result() for f in futures]
        assert not errors
    assert got == want
    assert 1 < max(seen) <= max_batch


def test_a_request_waits_for_the_kv_budget_and_one_over_it_is_a_400(tiny_exact_engine):
    """A budget that holds one request's cache: two requests run one after the other, both
    right; a request whose cache alone would exceed the budget is refused with the reason."""
    one = tiny_exact_engine.scheduler().kv_bytes(tiny_exact_engine.ready(Request(prompt(0), "ar", 40)))
    with live_server(SlowEngine(tiny_exact_engine, DELAY), ServeConfig(kv_budget=one)) as url:
        api = client(url)
        with cf.ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda i: api.chat.completions.create(
                model=MODEL, messages=prompt(i), max_tokens=40, temperature=0).choices[0].message.content, (0, 1)))
        assert got == [tiny_exact_engine.generate(prompt(i), method="ar", max_new_tokens=40).text for i in (0, 1)]
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": "x" * 80}], "max_tokens": 150})
        assert r.status_code == 400 and "KV budget" in r.json()["error"]["message"], r.text


def test_an_agents_next_turn_prefills_only_its_new_tokens_after_others_ran(tiny_exact_engine):
    """Turn 1, then other agents' requests, then turn 2 (the conversation plus a reply): turn 2
    reports the shared start as cached tokens and answers as it would alone."""
    turn1 = [{"role": "user", "content": "abc abc abc abc abc abc"}]
    with live_server(tiny_exact_engine, ServeConfig(max_batch=4)) as url:
        api = client(url)
        first = api.chat.completions.create(model=MODEL, messages=turn1, max_tokens=12, temperature=0)
        for i in range(3):
            api.chat.completions.create(model=MODEL, messages=prompt(i), max_tokens=8, temperature=0)
        turn2 = turn1 + [{"role": "assistant", "content": first.choices[0].message.content},
                         {"role": "user", "content": "bcd"}]
        second = api.chat.completions.create(model=MODEL, messages=turn2, max_tokens=12, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert len(tiny_exact_engine.encode(turn1)) <= cached < second.usage.prompt_tokens
    assert second.choices[0].message.content == tiny_exact_engine.generate(turn2, method="ar", max_new_tokens=12).text
