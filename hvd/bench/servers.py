"""The servers a load or agent benchmark talks to: started as processes on loopback, each on a
free port with its log in the run's folder, waited for until healthy, stopped at the end.

`hvd_server` and `llama_server` build the commands of `hvd serve` and llama-server's
`llama-server`; `spawn` starts any command as a `Server` (vLLM's is built in hvd/bench/load.py,
its only user).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

START_TIMEOUT = 600.0  # seconds a server may take to load (a first start converts the GGUF)


@dataclass
class Server:
    name: str
    url: str
    body: dict = field(default_factory=dict)  # extra body of every request
    cold: bool = False  # empty the shared store before each episode
    proc: Optional[subprocess.Popen] = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(threads: int, **extra: str) -> dict:
    """This process's environment with the server's thread count (and `extra`)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), **extra}


def spawn(name: str, cmd: Sequence[str], port: int, log: Path, threads: int, body: Optional[dict] = None,
          cold: bool = False, env: Optional[dict] = None, stderr_only: bool = False) -> Server:
    """`cmd` (serving on `port`) started with its output in `log` (`stderr_only`: stdout dropped)."""
    out = log.open("w")
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL if stderr_only else out,
                            stderr=out if stderr_only else subprocess.STDOUT, env=env or environment(threads))
    return Server(name, f"http://127.0.0.1:{port}/v1", dict(body or {}), cold, proc)


def hvd_server(name: str, method: str, logs: Path, threads: int, dtype: str, model: Optional[str],
               extra: Sequence[str] = (), cold: bool = False) -> Server:
    """`hvd serve --method <method>` (its requests ask for that method too)."""
    port = free_port()
    cmd = [sys.executable, "-m", "hvd.cli", "serve", "--port", str(port), "--method", method, "--threads",
           str(threads), "--dtype", dtype, *extra, *(["--model", model] if model else [])]
    return spawn(name, cmd, port, logs / f"{name.replace(' ', '-')}.log", threads,
                 {"speculative": {"method": method}}, cold, stderr_only=True)


def llama_server(name: str, binary: str, gguf: str, logs: Path, threads: int, args: Sequence[str] = (),
                 cold: bool = False) -> Server:
    """llama.cpp's `llama-server` on `gguf` with `args` (slots, context, speculation)."""
    port = free_port()
    cmd = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-tb", str(threads),
           "--jinja", "--metrics", *args]
    return spawn(name, cmd, port, logs / f"{name.replace(' ', '-')}.log", threads, cold=cold)


def wait_healthy(server: Server, log: Path) -> None:
    """Returns once `server` answers /health; a server that exits or takes over START_TIMEOUT is
    a RuntimeError naming `log`."""
    import httpx

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with status {server.proc.returncode}; see {log}")
        try:
            if httpx.get(server.url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server.name} did not become healthy in {START_TIMEOUT:.0f} s; see {log}")
