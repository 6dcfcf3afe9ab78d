"""`hvd serve` through the official `openai` client against a live server on loopback."""
from __future__ import annotations

import concurrent.futures as cf
import json

import httpx
import pytest

from hvd import methods
from hvd.errors import MethodUnavailable
from hvd.serve.app import ServeConfig

from live_server import MODEL, live_server, logged_errors

MESSAGES = [{"role": "user", "content": "abc abc abc abc"}]
N = 40


@pytest.fixture(scope="module")
def server(tiny_exact_engine):
    with live_server(tiny_exact_engine) as url:
        yield url


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def solo(engine, prompt, **kw) -> str:
    return engine.generate(prompt, method="ar", max_new_tokens=kw.pop("max_new_tokens", N), **kw).text


def runnable(engine) -> list[str]:
    out = []
    for m in methods.METHODS:
        try:
            engine.drafter(m)
            out.append(m)
        except MethodUnavailable:
            pass
    return out


def test_chat_every_method_identical_to_engine(client, tiny_exact_engine):
    want = solo(tiny_exact_engine, MESSAGES)
    for method in runnable(tiny_exact_engine):
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=N, temperature=0,
                                           extra_body={"speculative": {"method": method}})
        assert r.choices[0].message.content == want, method
        spec = r.model_extra["speculative"]
        assert spec["method"] == method and r.usage.completion_tokens == N
        assert spec["dtype"] == "int8" and spec["steps"] >= 1


def test_streamed_chat_and_usage_chunk(client, tiny_exact_engine):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=N, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == solo(tiny_exact_engine, MESSAGES)
    assert chunks[-2].choices[0].finish_reason == "length"
    last = chunks[-1]
    assert not last.choices and last.usage.completion_tokens == N
    assert last.model_extra["speculative"]["num_draft_tokens"] >= last.model_extra["speculative"]["num_accepted_tokens"]


def test_completions_plain_and_streamed(client, tiny_exact_engine):
    prompt = "hello hello hello"
    ids = tiny_exact_engine.tokenizer.encode(prompt, add_special_tokens=False)
    want = tiny_exact_engine.generate(ids, method="ar", max_new_tokens=N).text
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=N, temperature=0)
    assert r.choices[0].text == want
    s = client.completions.create(model=MODEL, prompt=prompt, max_tokens=N, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in s if c.choices) == want


def test_stop_seed_and_speculative_override(client, tiny_exact_engine):
    full = solo(tiny_exact_engine, MESSAGES)
    stop = full[10:13]
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=N, temperature=0, stop=[stop])
    assert r.choices[0].message.content == solo(tiny_exact_engine, MESSAGES, stop=[stop])
    assert r.choices[0].finish_reason == "stop" and stop not in r.choices[0].message.content
    kw = dict(model=MODEL, messages=MESSAGES, max_tokens=N, temperature=0.9, top_p=0.95, seed=7)
    a, b = (client.chat.completions.create(**kw).choices[0].message.content for _ in range(2))
    assert a == b
    c = client.chat.completions.create(**{**kw, "seed": 8}).choices[0].message.content
    assert c != a
    assert a == tiny_exact_engine.generate(MESSAGES, method="ar", max_new_tokens=N, temperature=0.9, top_p=0.95,
                                           seed=7).text  # the very text ar samples with that seed
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=N, temperature=0,
                                       extra_body={"speculative": {"method": "pld", "max_draft_tokens": 0}})
    spec = r.model_extra["speculative"]
    assert spec["method"] == "pld" and spec["num_draft_tokens"] == 0 and spec["steps"] == N - 1


def test_models_health_metrics(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0,
                                   extra_body={"speculative": {"method": "hvd"}})
    text = httpx.get(server + "/metrics").text
    for name in ("hvd:spec_decode_num_drafts_total", "hvd:spec_decode_num_draft_tokens_total",
                 "hvd:spec_decode_num_accepted_tokens_total", "hvd:spec_decode_num_accepted_tokens_per_pos_total",
                 "hvd:time_to_first_token_seconds_bucket", "hvd:time_per_output_token_seconds_bucket",
                 "hvd:num_requests_waiting", "hvd:requests_total", "hvd:spec_decode_steps_total",
                 'hvd:calibration_mode_tokens_per_second{method="hvd",mode="policy"}',
                 'hvd:calibration_mode_chosen{method="hvd",mode="cache-only"}',
                 'hvd:calibration_expected_accepted{bin="0",method="hvd"}',
                 'hvd:verify_cost_ratio{method="hvd",size="0"}', 'hvd:verify_cost_curve_age_seconds{method="hvd"}',
                 'hvd:verify_cost_curve_status{method="hvd",status="measured"}'):
        assert name in text, name


def test_api_key(tiny_exact_engine):
    from openai import AuthenticationError, OpenAI

    with live_server(tiny_exact_engine, ServeConfig(api_key="sekret")) as url:
        bad = OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(AuthenticationError):
            bad.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)
        good = OpenAI(base_url=url + "/v1", api_key="sekret", max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4).choices[0].message.content
        assert httpx.get(url + "/health").status_code == 200  # not behind the key
        for auth in ("Bearer sekre", "Bearer sekret2", "Bearer s\u00e9kret".encode(), b""):  # compared as bytes
            r = httpx.post(url + "/reset_stores", json={}, headers={"authorization": auth})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
        assert httpx.post(url + "/reset_stores", json={}, headers={"authorization": "Bearer sekret"}).status_code == 200


OK = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4}


def with_raw(text: str) -> bytes:
    """OK's JSON with `text` (raw JSON, e.g. `"temperature": NaN`) added: Python's json reads NaN and Infinity."""
    return (json.dumps(OK)[:-1] + ", " + text + "}").encode()


BAD_INPUTS = [  # (body, status, words in the message)
    (b"{not json", 400, "not valid JSON"),
    ([1, 2], 400, "JSON object"),
    ({"messages": MESSAGES}, 400, "'model' is required"),
    ({**OK, "model": "gpt-9"}, 404, "does not exist"),
    ({**OK, "messages": []}, 400, "non-empty list"),
    ({**OK, "messages": "hi"}, 400, "non-empty list"),
    ({**OK, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role must be one of"),
    ({**OK, "messages": [{"role": "user", "content": 5}]}, 400, "content must be a string"),
    ({**OK, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400, "only text parts"),
    ({**OK, "messages": [{"role": "user", "content": "   "}]}, 400, "no content"),
    ({**OK, "temperature": -1}, 400, "'temperature' must be in"),
    ({**OK, "temperature": "hot"}, 400, "'temperature' must be a number"),
    ({**OK, "top_p": 0}, 400, "'top_p' must be in"),
    ({**OK, "max_tokens": 0}, 400, "'max_tokens' must be >= 1"),
    ({**OK, "max_tokens": 10 ** 6}, 400, "context window"),
    ({**OK, "messages": [{"role": "user", "content": "a" * 300}]}, 400, "context window"),
    ({**OK, "n": 2}, 400, "only n = 1"),
    ({**OK, "stop": [""]}, 400, "'stop' must be"),
    ({**OK, "seed": 1.5}, 400, "'seed' must be an integer"),
    ({**OK, "response_format": {"type": "yaml"}}, 400, "'response_format' must be"),
    ({**OK, "logprobs": True}, 400, "'logprobs' is not supported"),
    ({**OK, "speculative": {"method": "magic"}}, 400, "unknown speculative method"),
    ({**OK, "speculative": {"max_draft_tokens": -1}}, 400, "max_draft_tokens' must be >= 0"),
    ({**OK, "speculative": {"bogus": 1}}, 400, "unknown key"),
    ({**OK, "speculative": {"method": "dflash"}}, 400, "dflash"),
    ({**OK, "tools": [{"type": "function"}]}, 400, "tools[0]"),
    ({**OK, "stream": "yes"}, 400, "'stream' must be a boolean"),
    (with_raw('"temperature": NaN'), 400, "'temperature' must be a finite number"),
    (with_raw('"temperature": Infinity'), 400, "'temperature' must be a finite number"),
    (with_raw('"top_p": NaN'), 400, "'top_p' must be a finite number"),
    (with_raw('"top_p": -Infinity'), 400, "'top_p' must be a finite number"),
    (with_raw('"temperature": 1e999'), 400, "'temperature' must be a finite number"),
    (b"[" * 100_000, 400, "nests too deeply"),
]
STREAMED = [(body, status, words) for body, status, words in BAD_INPUTS  # as stream requests
            if isinstance(body, dict) and "stream" not in body or isinstance(body, bytes) and body.startswith(b"{\"")]


def assert_bad_input(url: str, content: bytes, status: int, words: str) -> None:
    """`content` gets `status` in the OpenAI shape and one line, uvicorn logs no traceback, and
    the server still serves."""
    with logged_errors() as errors:
        r = httpx.post(url + "/v1/chat/completions", content=content, headers={"content-type": "application/json"},
                       timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and words in err["message"], err
    assert "\n" not in err["message"] and not errors, [e.getMessage() for e in errors]
    ok = httpx.post(url + "/v1/chat/completions", json=OK, timeout=60)  # still serving
    assert ok.status_code == 200


@pytest.mark.parametrize("body,status,words", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_bad_input_gets_a_4xx_in_the_openai_shape(server, body, status, words):
    assert_bad_input(server, body if isinstance(body, bytes) else json.dumps(body).encode(), status, words)


@pytest.mark.parametrize("body,status,words", STREAMED, ids=[str(i) for i in range(len(STREAMED))])
def test_bad_streamed_input_gets_a_4xx_before_the_stream_starts(server, body, status, words):
    """Every check runs before the response starts: a bad stream request is a 4xx, not a 200
    with an error event inside."""
    content = json.dumps({**body, "stream": True}).encode() if isinstance(body, dict) else \
        b'{"stream": true, ' + body[1:]
    assert_bad_input(server, content, status, words)


def test_queue_full_gives_429_with_retry_after(tiny_exact_engine):
    with live_server(tiny_exact_engine, ServeConfig(max_queue=1, max_batch=1)) as url:
        body = {**OK, "max_tokens": 150, "speculative": {"method": "ar"}}
        with cf.ThreadPoolExecutor(8) as pool:
            rs = list(pool.map(lambda _: httpx.post(url + "/v1/chat/completions", json=body, timeout=120), range(8)))
        codes = sorted(r.status_code for r in rs)
        assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
        assert all(r.headers.get("retry-after") == "1" for r in rs if r.status_code == 429)


def test_load_mixed_clients_and_disconnects(server, tiny_exact_engine):
    """32 clients x 2 requests, streamed and not, every 8th dropping its stream early: every
    completed response equals its solo output, no 5xx, and the server serves on."""
    prompts = [[{"role": "user", "content": f"{c} {c}{c} {c}"}] for c in "abcdefgh"]
    want = {i: solo(tiny_exact_engine, p, max_new_tokens=24) for i, p in enumerate(prompts)}

    def one(k: int):
        i, body = k % len(prompts), {"model": MODEL, "messages": prompts[k % len(prompts)], "max_tokens": 24,
                                     "temperature": 0, "speculative": {"method": ("suffix", "pld", "ar", "hvd")[k % 4]}}
        if k % 2:
            r = httpx.post(server + "/v1/chat/completions", json=body, timeout=120)
            return i, r.status_code, r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else None
        with httpx.stream("POST", server + "/v1/chat/completions", json={**body, "stream": True}, timeout=120) as r:
            text = ""
            for n, line in enumerate(r.iter_lines()):
                if k % 8 == 0 and n == 2:
                    return i, r.status_code, None  # disconnects mid-stream
                if line.startswith("data: {"):
                    d = json.loads(line[6:])["choices"]
                    text += (d[0]["delta"].get("content") or "") if d else ""
            return i, r.status_code, text

    with cf.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(64)))
    assert all(code == 200 for _, code, _ in results)
    assert all(text == want[i] for i, _, text in results if text is not None)
    assert httpx.post(server + "/v1/chat/completions", json=OK, timeout=60).status_code == 200


@pytest.mark.slow
def test_cli_serves_the_real_model_and_exits_0_on_sigterm(tmp_path):
    """`hvd serve` as a user runs it: /health after load, a request in flight finishes, SIGTERM exits 0."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from live_server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hvd.cli", "serve", "--port", str(port), "--method", "pld"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.5)
        body = {"model": "SmolLM2-135M-Instruct", "max_tokens": 48, "temperature": 0,
                "messages": [{"role": "user", "content": "Count from one to ten."}]}
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", httpx.post(url + "/v1/chat/completions", json=body,
                                                                              timeout=120)))
        t.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert proc.wait(60) == 0
        assert out["r"].status_code == 200 and out["r"].json()["usage"]["completion_tokens"] > 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
