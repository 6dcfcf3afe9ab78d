"""Starting a benchmark's servers (hvd/bench/servers.py)."""
import sys

import pytest

from hvd.bench.servers import free_port, spawn, wait_healthy


def test_a_server_that_exits_is_one_error_naming_its_log(tmp_path):
    log = tmp_path / "dead.log"
    server = spawn("dead", [sys.executable, "-c", "print('no model here'); raise SystemExit(3)"], free_port(), log, 1)
    with pytest.raises(RuntimeError, match=r"dead exited with status 3; see .*dead\.log"):
        wait_healthy(server, log)
    server.stop()
    assert "no model here" in log.read_text()


def test_a_healthy_server_is_waited_for_and_stopped(tmp_path):
    port = free_port()
    serve = ("import http.server as h\n"
             "class H(h.BaseHTTPRequestHandler):\n"
             "    def do_GET(self):\n"
             "        self.send_response(200 if self.path == '/health' else 404); self.end_headers()\n"
             f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n")
    server = spawn("up", [sys.executable, "-c", serve], port, tmp_path / "up.log", 1, body={"a": 1})
    try:
        wait_healthy(server, tmp_path / "up.log")
        assert server.url == f"http://127.0.0.1:{port}/v1" and server.body == {"a": 1}
    finally:
        server.stop()
    assert server.proc.poll() is not None
