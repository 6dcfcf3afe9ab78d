"""The agent-loop benchmark (`hvd agent-bench`): multi-turn agent episodes played through
OpenAI-compatible servers with the official `openai` client, as an agent framework would.

Episodes (hvd/data/episodes.py `Episode`): BFCL multi-turn scenarios, whose replies are parsed
as calls, run on fresh BFCL backends and answered with a tool message (one tool round per user
turn), and two-step whole-file edits. Every request is greedy (temperature 0), so a lossless
server's episode is the same conversation whatever its method.

Servers: one `hvd serve` process per (method, store condition) — the shared store is fed by
every speculative method, so two methods on one server would draft from each other's copies
of the same episode. "cold": the store is emptied (`POST /reset_stores`) before each episode,
so it holds only that episode's own earlier replies; "warm": the server first plays train-split
episodes of both kinds and keeps everything. Optional peers: `llama-server` (scripts/
build_llama_server.sh) on the same GGUF file, plain and with its n-gram speculation. Episodes
are interleaved over the servers (episode 1 on every server, then episode 2, ...), all on the
same thread count, one request at a time.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hvd.bench.servers import Server, hvd_server, llama_server, wait_healthy
from hvd.data.bfcl import run_tool_call
from hvd.data.episodes import Episode, edit_episodes, tool_episodes

LLAMA_SPEC = {"llama-server": (), "llama-server ngram-mod": ("--spec-type", "ngram-mod"),
              "llama-server ngram-cache": ("--spec-type", "ngram-cache")}


@dataclass(frozen=True)
class AgentBenchConfig:
    methods: tuple[str, ...] = ("ar", "hvd")
    kinds: tuple[str, ...] = ("tools", "edit")
    episodes: int = 3  # eval episodes per kind
    warm_episodes: int = 2  # train episodes per kind played first on the warm servers
    max_tokens: int = 200
    tool_rounds: int = 1  # tool results sent back per user turn at most
    threads: int = 1
    model: Optional[str] = None  # None: the default model
    dtype: str = "auto"
    llama_server: Optional[str] = None  # path of a llama-server binary: run it as the peer
    gguf: Optional[str] = None  # the GGUF file llama-server loads (default: the default model's)


def parse_calls(text: str) -> list[str]:
    """The calls of a reply written as a Python list of calls (``[f(a=1), g()]``), else []."""
    text = text.strip().removeprefix("```python").removeprefix("```").removesuffix("```").strip()
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError):
        return []
    items = node.elts if isinstance(node, ast.List) else [node]
    return [ast.unparse(c) for c in items if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)]


def play(client, model: str, server: Server, episode: Episode, cfg: AgentBenchConfig) -> dict:
    """One episode against one server: every request's timings, and the episode's totals."""
    messages: list[dict] = [{"role": "system", "content": episode.system}] if episode.system else []
    backends = episode.backends() if episode.kind == "tools" else []
    requests, texts = [], []
    for t, turn in enumerate(episode.turns):
        messages.append({"role": "user", "content": turn})
        for r in range(1 + cfg.tool_rounds):
            t0 = time.perf_counter()
            resp = client.chat.completions.create(model=model, messages=messages, max_tokens=cfg.max_tokens,
                                                  temperature=0, extra_body=server.body or None)
            e2e = time.perf_counter() - t0
            text = resp.choices[0].message.content or ""
            texts.append(text)
            requests.append({"turn": t, "round": r, "e2e_seconds": e2e, **_timings(resp)})
            messages.append({"role": "assistant", "content": text})
            calls = parse_calls(text) if episode.kind == "tools" else []
            if not calls or r == cfg.tool_rounds:
                break
            results = "\n".join(f"{c} -> {run_tool_call(c, backends)}" for c in calls)
            messages.append({"role": "tool", "content": results})
    return {"episode": episode.id, "kind": episode.kind, "server": server.name, "requests": requests,
            "e2e_seconds": sum(q["e2e_seconds"] for q in requests),
            "decode_seconds": sum(q["decode_seconds"] for q in requests),
            "completion_tokens": sum(q["completion_tokens"] for q in requests),
            "conversation": hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]}


def _timings(resp) -> dict:
    """Decode time and token counts from hvd's `speculative` object or llama-server's `timings`."""
    extra = resp.model_extra or {}
    out = {"completion_tokens": resp.usage.completion_tokens, "prompt_tokens": resp.usage.prompt_tokens}
    if "speculative" in extra:
        s = extra["speculative"]
        out.update(decode_seconds=s["decode_seconds"], prefill_seconds=s["prefill_seconds"],
                   mean_accepted_length=s["mean_accepted_length"], steps_per_arm=s.get("steps_per_arm", {}))
    elif "timings" in extra:
        t = extra["timings"]
        out.update(decode_seconds=t.get("predicted_ms", 0.0) / 1000, prefill_seconds=t.get("prompt_ms", 0.0) / 1000,
                   draft_tokens=t.get("draft_n", 0), accepted_tokens=t.get("draft_n_accepted", 0))
    else:
        out.update(decode_seconds=float("nan"), prefill_seconds=float("nan"))
    return out


# ---- servers ------------------------------------------------------------------------------


def start_hvd(method: str, cold: bool, cfg: AgentBenchConfig, logs: Path) -> Server:
    name = f"hvd {method}" + ("" if method == "ar" else " cold" if cold else " warm")
    return hvd_server(name, method, logs, cfg.threads, cfg.dtype, cfg.model, cold=cold)


def start_llama(name: str, cfg: AgentBenchConfig, gguf: str, logs: Path) -> Server:
    return llama_server(name, cfg.llama_server, gguf, logs, cfg.threads, ("-c", "8192", "-np", "1", *LLAMA_SPEC[name]))


# ---- the run ------------------------------------------------------------------------------


def run(cfg: AgentBenchConfig, logs: Path, say=print) -> dict:
    import httpx
    import openai

    from hvd.targets import loader

    episodes = [e for k in cfg.kinds for e in _episodes(k, "eval", cfg.episodes)]
    warmup = [e for k in cfg.kinds for e in _episodes(k, "train", cfg.warm_episodes)]
    logs.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    try:
        for m in cfg.methods:
            servers += [start_hvd(m, True, cfg, logs)] if m == "ar" else \
                [start_hvd(m, True, cfg, logs), start_hvd(m, False, cfg, logs)]
        if cfg.llama_server:
            gguf = cfg.gguf or str(loader.resolve(cfg.model) if cfg.model else loader.default_model_path())
            servers += [start_llama(n, cfg, gguf, logs) for n in LLAMA_SPEC]
        for s in servers:
            wait_healthy(s, logs)
        say(f"agent-bench: {len(servers)} servers up; {len(episodes)} episodes, {len(warmup)} warm-up episodes")
        clients = {s.name: openai.OpenAI(base_url=s.url, api_key="none", timeout=600, max_retries=0) for s in servers}
        ids = {n: c.models.list().data[0].id for n, c in clients.items()}
        for s in servers:
            if s.name.endswith(" warm"):
                for e in warmup:
                    play(clients[s.name], ids[s.name], s, e, cfg)
        results = []
        for e in episodes:
            for s in servers:
                if s.cold:
                    httpx.post(s.url.removesuffix("/v1") + "/reset_stores", json={}, timeout=60).raise_for_status()
                results.append(play(clients[s.name], ids[s.name], s, e, cfg))
                r = results[-1]
                say(f"  {e.id:<40} {s.name:<26} {r['e2e_seconds']:7.2f} s  {r['completion_tokens']:5d} tokens  "
                    f"{len(r['requests'])} requests")
    finally:
        for s in servers:
            s.stop()
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()},
            "servers": [s.name for s in servers], "episodes": results}


def _episodes(kind: str, split: str, n: int) -> list[Episode]:
    if n <= 0:
        return []
    return tool_episodes(split, n) if kind == "tools" else edit_episodes(split, n)


def summarize(report: dict, baseline: str = "hvd ar") -> list[dict]:
    """Per (kind, server): median episode time, decode tok/s, and per-episode speedups over `baseline`."""
    rows = []
    by = {(r["episode"], r["server"]): r for r in report["episodes"]}
    kinds = sorted({r["kind"] for r in report["episodes"]}, reverse=True)
    for kind in kinds:
        ids = list(dict.fromkeys(r["episode"] for r in report["episodes"] if r["kind"] == kind))
        for s in report["servers"]:
            eps = [by[(i, s)] for i in ids if (i, s) in by]
            base = [by.get((i, baseline)) for i in ids]
            e2e = [b["e2e_seconds"] / r["e2e_seconds"] for r, b in zip(eps, base) if b]
            dec = [(b["decode_seconds"] / b["completion_tokens"]) / (r["decode_seconds"] / r["completion_tokens"])
                   for r, b in zip(eps, base) if b and r["completion_tokens"] and b["completion_tokens"]]
            rows.append({"kind": kind, "server": s, "episodes": len(eps),
                         "median_episode_seconds": statistics.median(r["e2e_seconds"] for r in eps),
                         "decode_tok_s": sum(r["completion_tokens"] for r in eps) / sum(r["decode_seconds"] for r in eps),
                         "e2e_speedup_per_episode": [round(x, 2) for x in e2e],
                         "median_e2e_speedup": statistics.median(e2e) if e2e else None,
                         "median_decode_speedup": statistics.median(dec) if dec else None,
                         "same_conversation_as_baseline": all(r["conversation"] == b["conversation"]
                                                              for r, b in zip(eps, base) if b)})
    return rows


def table(rows: Sequence[dict]) -> str:
    head = "| episodes | server | n | median episode s | decode tok/s | e2e speedup (per episode) | median decode speedup | same text as ar |\n"
    head += "|---|---|---:|---:|---:|---|---:|---|\n"
    body = "".join(
        f"| {r['kind']} | {r['server']} | {r['episodes']} | {r['median_episode_seconds']:.2f} | {r['decode_tok_s']:.1f} | "
        f"{_fmt(r['median_e2e_speedup'])} ({', '.join(f'{x:.2f}' for x in r['e2e_speedup_per_episode'])}) | "
        f"{_fmt(r['median_decode_speedup'])} | {'yes' if r['same_conversation_as_baseline'] else 'no'} |\n"
        for r in rows)
    return head + body


def _fmt(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.2f}x"


def save(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))


def machine() -> dict[str, Any]:
    """The CPU (model name and the instruction sets the kernels may use), the cores and the date."""
    import datetime

    from hvd.machine import ISA_FLAGS, cpu_flags, cpu_name

    return {"cpu": cpu_name(), "isa": " ".join(f for f in ISA_FLAGS if f in cpu_flags()), "cores": os.cpu_count(),
            "date": datetime.date.today().isoformat()}
