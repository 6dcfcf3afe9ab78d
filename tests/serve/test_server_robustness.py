"""`hvd serve` against clients that misbehave and through its own lifecycle, on a live server:
disconnects, oversized bodies, large prompts, cross-site POSTs, shutdown, a dead worker, a
chat template that refuses the messages."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hvd.engine import Engine
from hvd.serve.app import ServeConfig

from conftest import char_tokenizer
from live_server import MODEL, SlowEngine, free_port, live_server, logged_errors

DELAY = 0.05  # seconds added to every decoding step of the slowed engine
LIMIT = 2 * 2 ** 20  # the slowed server's --max-body-bytes
JSON = {"content-type": "application/json"}
MESSAGES = [{"role": "user", "content": "abc abc abc abc"}]
OK = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4}
LONG = {**OK, "max_tokens": 200, "speculative": {"method": "ar"}}  # 200 steps: 10 s slowed, unless cancelled


@pytest.fixture(scope="module")
def slow(tiny_exact_engine):
    with live_server(SlowEngine(tiny_exact_engine, DELAY), ServeConfig(max_body_bytes=LIMIT, max_batch=1)) as url:
        yield url


@pytest.fixture()
def no_tracebacks(slow):
    with logged_errors() as errors:
        yield
    assert not errors, [r.getMessage() for r in errors]


def metric(url: str, sample: str) -> float:
    """The value of one sample (name and labels, as /metrics writes them), 0 if absent."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def post(url: str, body, path: str = "/v1/chat/completions", **kw) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=kw.pop("timeout", 60), **kw)


def assert_error(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and words in err["message"], err


def test_a_non_streamed_request_is_cancelled_when_its_client_disconnects(slow, no_tracebacks):
    before = metric(slow, 'hvd:requests_total{outcome="cancelled"}')
    payload = json.dumps(LONG).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    port = int(slow.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + payload)
        wait_for(lambda: metric(slow, "hvd:num_requests_running") == 1)
    t0 = time.monotonic()
    r = post(slow, OK)  # queued behind the long one unless it was cancelled
    assert r.status_code == 200 and time.monotonic() - t0 < 3
    assert metric(slow, 'hvd:requests_total{outcome="cancelled"}') == before + 1


def test_a_body_over_the_limit_gets_413(slow, no_tracebacks):
    big = json.dumps({**OK, "padding": "x" * LIMIT}).encode()
    assert_error(httpx.post(slow + "/v1/chat/completions", content=big, headers=JSON, timeout=60), 413,
                 f"limit of {LIMIT} bytes")
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))  # no Content-Length: counted as it comes
    assert_error(httpx.post(slow + "/v1/completions", content=chunks, headers=JSON, timeout=60), 413, "limit")
    assert post(slow, OK).status_code == 200


def test_health_answers_while_a_large_prompt_is_tokenized(slow, no_tracebacks):
    body = json.dumps({"model": MODEL, "prompt": "ab " * 500_000, "max_tokens": 4}).encode()  # ~1 s to tokenize
    with cf.ThreadPoolExecutor(1) as pool:
        big = pool.submit(httpx.post, slow + "/v1/completions", content=body, headers=JSON, timeout=60)
        seconds = []
        while not big.done():
            t0 = time.monotonic()
            assert httpx.get(slow + "/health", timeout=10).status_code == 200
            seconds.append(time.monotonic() - t0)
            time.sleep(0.02)
        assert_error(big.result(), 400, "context window")
    assert len(seconds) >= 5 and max(seconds) < 0.5, seconds


@pytest.mark.parametrize("path,content_type", [("/v1/chat/completions", "text/plain"),
                                               ("/v1/chat/completions", None),
                                               ("/v1/completions", "application/x-www-form-urlencoded"),
                                               ("/reset_stores", "text/plain"), ("/reset_stores", None)])
def test_a_post_that_is_not_json_gets_415(slow, no_tracebacks, path, content_type):
    good = {"/v1/chat/completions": OK, "/v1/completions": {"model": MODEL, "prompt": "abc", "max_tokens": 4},
            "/reset_stores": {}}[path]
    headers = {"content-type": content_type} if content_type else {}
    assert_error(httpx.post(slow + path, content=json.dumps(good), headers=headers, timeout=60), 415,
                 "Content-Type: application/json")
    assert httpx.post(slow + path, json=good, timeout=60).status_code == 200


def test_unknown_path_and_method_get_the_openai_shape(slow, no_tracebacks):
    assert_error(httpx.get(slow + "/v1/nothing", timeout=10), 404, "Not Found")
    assert_error(httpx.get(slow + "/v1/chat/completions", timeout=10), 405, "Method Not Allowed")


def test_shutdown_answers_the_queued_503_at_once_and_the_running_one_at_the_timeout(tiny_exact_engine):
    timeout = 1.0
    stack = contextlib.ExitStack()
    url = stack.enter_context(live_server(SlowEngine(tiny_exact_engine, DELAY),
                                                 ServeConfig(shutdown_timeout=timeout, max_batch=1)))
    with cf.ThreadPoolExecutor(4) as pool:
        def timed(body):
            r = post(url, body)
            return r, time.monotonic()

        running = pool.submit(timed, LONG)
        wait_for(lambda: metric(url, "hvd:num_requests_running") == 1)
        queued = [pool.submit(timed, OK), pool.submit(timed, {**OK, "stream": True})]
        wait_for(lambda: metric(url, "hvd:num_requests_waiting") == 2)
        t0 = time.monotonic()
        closing = pool.submit(stack.close)
        for f in queued:
            r, at = f.result()
            assert_error(r, 503, "shutting down")
            assert at - t0 < 0.8
        r, at = running.result()
        assert_error(r, 503, "did not finish within the shutdown timeout")
        assert timeout - 0.1 < at - t0 < timeout + 1
        closing.result()
    assert time.monotonic() - t0 < timeout + 3


def test_sigint_lets_the_running_request_finish_503s_the_queued_and_exits_0():
    """The `hvd serve` command line as a process: $HVD_API_KEY, SIGINT, exit status 0."""
    port, key = free_port(), "sekret-from-env"
    cmd = [sys.executable, str(Path(__file__).with_name("tiny_serve.py")), str(DELAY), "--port", str(port),
           "--method", "suffix", "--model-name", MODEL, "--shutdown-timeout", "10", "--max-batch", "1"]
    env = {**os.environ, "HVD_API_KEY": key, "HVD_COST_CHECK": "0"}  # a cached cost curve as it is: a quicker start
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url, auth = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {key}"}
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/health", timeout=2).status_code == 200
            return False

        wait_for(up, timeout=120)
        assert_error(post(url, OK), 401, "API key")
        with cf.ThreadPoolExecutor(3) as pool:
            running = pool.submit(post, url, {**OK, "max_tokens": 40, "speculative": {"method": "ar"}}, headers=auth)
            wait_for(lambda: metric(url, "hvd:num_requests_running") == 1)
            queued = [pool.submit(post, url, OK, headers=auth), pool.submit(post, url, {**OK, "stream": True},
                                                                            headers=auth)]
            wait_for(lambda: metric(url, "hvd:num_requests_waiting") == 2)
            proc.send_signal(signal.SIGINT)
            for f in queued:
                assert_error(f.result(), 503, "shutting down")
            r = running.result()
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 40
        assert proc.wait(15) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker is made to die
def test_health_and_requests_get_503_once_the_worker_has_died(tiny_exact_engine):
    poison = tiny_exact_engine.tokenizer.encode("#", add_special_tokens=False)[0]
    with live_server(SlowEngine(tiny_exact_engine, 0.0, die_on=poison)) as url:
        assert httpx.get(url + "/health").json() == {"status": "ok"}
        assert_error(post(url, {**OK, "messages": [{"role": "user", "content": "a # b"}]}), 503, "worker has stopped")
        wait_for(lambda: httpx.get(url + "/health").status_code == 503)
        assert_error(httpx.get(url + "/health"), 503, "worker has stopped")
        assert_error(post(url, OK, timeout=5), 503, "worker has stopped")


ALTERNATING = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
               "{% endif %}{{ m['content'] }}\n{% endfor %}")


def test_a_chat_template_that_raises_is_a_400(tiny_exact_engine):
    tok = char_tokenizer()
    tok.chat_template = ALTERNATING
    engine = Engine(tiny_exact_engine.target, tok)
    engine.eos_ids = frozenset()
    with live_server(engine) as url, logged_errors() as errors:
        two_users = [{"role": "user", "content": "ab"}, {"role": "user", "content": "cd"}]
        for stream in (False, True):
            assert_error(post(url, {**OK, "messages": two_users, "stream": stream}), 400,
                         "chat template rejected the messages: Conversation roles must alternate")
        assert post(url, OK).status_code == 200
    assert not errors
