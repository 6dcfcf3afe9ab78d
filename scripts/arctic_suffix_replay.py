"""Peer replay: ArcticInference's SuffixDecodingCache over hvd's recorded greedy `ar` outputs,
beside hvd's own `suffix` at the same settings.

Optional peer measurement (not part of hvd). Build the extension first:
    scripts/build_arctic_suffix.sh            # -> ${HVD_CACHE:-~/.cache/hvd}/arctic_suffix
then
    .venv/bin/python scripts/arctic_suffix_replay.py --suite agentic-edit --limit 6 \
        --suite agentic-tools --limit 2 --max-new-tokens 200 --json out.json

Prompts, token ids and references are those of `hvd bench --replay` (same suites, encoder,
reference store and max_new_tokens, so cached references are reused). The walk mirrors
hvd/offline/replay.py step for step: the first output token comes from prefill (not a step);
the request is started with the prompt and the first token is fed as the active response;
then each step speculates on prompt + committed, caps the draft at the engine's per-step
budget (limit - generated - 1), takes the deepest root path matching the reference
(hvd.types.Draft.accepted_path), commits accepted + 1 bonus (cut at the reference's end) and
feeds the committed tokens to the cache. tau = tokens after the first / steps, summed over
the suite's prompts, exactly as hvd's replay report. Every prompt gets a FRESH cache: no
response of an earlier prompt is ever visible (hvd's replay is fresh per prompt too: each
prompt's drafter gets a private response store, fed only at the request's end).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def arctic_prefix() -> Path:
    return Path(os.environ.get("HVD_CACHE", Path.home() / ".cache" / "hvd")) / "arctic_suffix"


@dataclass(frozen=True)
class Setting:
    name: str
    max_tree_depth: int  # SuffixDecodingCache(max_tree_depth=...)
    max_spec_tokens: int
    max_spec_factor: float
    max_spec_offset: float
    min_token_prob: float
    use_tree_spec: bool


# (a) hvd's suffix settings as the brief states them; (b) SuffixDecodingCache's own keyword
# defaults (max_spec_tokens=None means the tree depth, 64: the wrapper's None branch reads a
# missing attribute `self.max_depth`, so it is passed explicitly); (c) the defaults of the
# package's own simulator (arctic_inference/suffix_decoding/simulator.py), which use a tree.
SETTINGS = {
    "as-ours": Setting("as-ours: tree, 32 tok, factor 2.0, p>=0.1", 64, 32, 2.0, 0.0, 0.1, True),
    "as-ours-f3": Setting("as-ours, factor 3.0: tree, 32 tok, factor 3.0, p>=0.1", 64, 32, 3.0, 0.0, 0.1, True),
    "path-f3": Setting("path, 32 tok, factor 3.0, p>=0.1", 64, 32, 3.0, 0.0, 0.1, False),
    "lib-defaults": Setting("library defaults: path, 64 tok, factor 1.0, p>=0.1", 64, 64, 1.0, 0.0, 0.1, False),
    "sim-defaults": Setting("simulator defaults: tree, 64 tok, factor 1.0, p>=0.1", 64, 64, 1.0, 0.0, 0.1, True),
    # (d) a grid around (a), so that "ArcticInference's best setting" is its best over more than
    # one point: factor 4-5, 64 tokens, p 0.05/0.2, paths; and hvd's own defaults (a path, factor 2)
    "as-ours-f4": Setting("tree, 32 tok, factor 4.0, p>=0.1", 64, 32, 4.0, 0.0, 0.1, True),
    "as-ours-f5": Setting("tree, 32 tok, factor 5.0, p>=0.1", 64, 32, 5.0, 0.0, 0.1, True),
    "tree64-f3": Setting("tree, 64 tok, factor 3.0, p>=0.1", 64, 64, 3.0, 0.0, 0.1, True),
    "tree64-f4": Setting("tree, 64 tok, factor 4.0, p>=0.1", 64, 64, 4.0, 0.0, 0.1, True),
    "as-ours-f3-p05": Setting("tree, 32 tok, factor 3.0, p>=0.05", 64, 32, 3.0, 0.0, 0.05, True),
    "as-ours-f3-p2": Setting("tree, 32 tok, factor 3.0, p>=0.2", 64, 32, 3.0, 0.0, 0.2, True),
    "path-f4": Setting("path, 32 tok, factor 4.0, p>=0.1", 64, 32, 4.0, 0.0, 0.1, False),
    "hvd-defaults": Setting("hvd's defaults: path, 32 tok, factor 2.0, p>=0.1", 64, 32, 2.0, 0.0, 0.1, False),
}


def replay_arctic(cache_cls, s: Setting, prompt: list[int], reference: list[int], limit: int) -> tuple[int, int, int]:
    """One prompt on a fresh cache: (tokens after the first, steps, draft tokens proposed)."""
    from hvd.types import Draft

    cache = cache_cls(max_tree_depth=s.max_tree_depth, max_cached_requests=-1)
    out, steps, decoded, proposed = 1, 0, 0, 0
    if out < len(reference):
        cache.start_request(0, prompt)
        cache.add_active_response(0, reference[:1])
    seq = prompt + reference[:1]
    while out < len(reference):
        budget = limit - out - 1
        draft = Draft.empty()
        if budget > 0:
            r = cache.speculate(0, seq, max_spec_tokens=min(s.max_spec_tokens, budget),
                                max_spec_factor=s.max_spec_factor, max_spec_offset=s.max_spec_offset,
                                min_token_prob=s.min_token_prob, use_tree_spec=s.use_tree_spec)
            draft = Draft(tuple(int(t) for t in r.token_ids), tuple(int(p) for p in r.parents)).truncate(budget)
        n = draft.matched(reference[out:])
        committed = reference[out : out + n + 1]  # accepted + bonus, cut at the end
        steps += 1
        decoded += len(committed)
        proposed += len(draft)
        seq.extend(committed)
        out += len(committed)
        cache.add_active_response(0, committed)
    if out > 1:
        cache.stop_request(0)
    return decoded, steps, proposed


def replay_hvd(s: Setting, prompt: list[int], reference: list[int], limit: int,
               arctic_counting: bool = False) -> tuple[int, int, int]:
    """hvd's `suffix` at the same setting (its other options at their defaults, or with
    `arctic_counting` the three that count as ArcticInference does), through hvd's own
    replay: (tokens after the first, steps, draft tokens proposed)."""
    from hvd.offline.replay import replay
    from hvd.drafters.suffix import SuffixConfig, SuffixDrafter

    if s.max_spec_offset:
        raise ValueError("hvd's suffix has no max_spec_offset")
    cfg = SuffixConfig(max_depth=s.max_tree_depth, max_spec=s.max_spec_tokens, spec_factor=s.max_spec_factor,
                       min_prob=s.min_token_prob, tree=s.use_tree_spec)
    if arctic_counting:
        cfg = replace(cfg, count_ends=True, recent_first=False, split_response=True)
    records = replay(SuffixDrafter(cfg), prompt, reference, limit=limit)
    return sum(r.committed for r in records), len(records), sum(r.draft_len for r in records)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", action="append", required=True, help="suite (repeatable)")
    ap.add_argument("--limit", action="append", type=int, help="prompts per suite (one, or one per --suite)")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--settings", default="as-ours,lib-defaults", help=f"comma list of {','.join(SETTINGS)}")
    ap.add_argument("--dtype", default="int8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    limits = a.limit or [None]
    if len(limits) == 1:
        limits = limits * len(a.suite)
    if len(limits) != len(a.suite):
        ap.error("give one --limit, or one per --suite")
    settings = [SETTINGS[k.strip()] for k in a.settings.split(",") if k.strip()]

    sys.path.insert(0, str(arctic_prefix()))
    try:
        from arctic_inference.suffix_decoding import SuffixDecodingCache
    except ImportError as e:
        sys.exit(f"arctic_suffix_replay: {e}; run scripts/build_arctic_suffix.sh first")
    import arctic_inference.suffix_decoding as ad

    from hvd.offline.references import ReferenceStore, reference
    from hvd.data.suites import load_suite
    from hvd.engine import Engine

    engine = Engine.load(dtype=a.dtype, threads=a.threads)
    store = ReferenceStore.for_target(engine.target)
    rows = []
    for suite, limit in zip(a.suite, limits):
        prompts = load_suite(suite, "eval", limit, a.max_new_tokens)
        data = []
        for p in prompts:
            ids = engine.encode(list(p.messages))
            n = a.max_new_tokens or p.max_new_tokens
            ref = reference(engine, store, p.id, ids, n)
            data.append((p.id, ids, ref, engine.token_limit(len(ids), n)))
        for s in settings:
            for who, run in (("arctic", lambda ids, ref, lim: replay_arctic(SuffixDecodingCache, s, ids, ref, lim)),
                             ("hvd", lambda ids, ref, lim: replay_hvd(s, ids, ref, lim)),
                             ("hvd-arctic-counting", lambda ids, ref, lim: replay_hvd(s, ids, ref, lim, True))):
                tokens = steps = proposed = 0
                per_prompt = []
                t0 = time.perf_counter()
                for pid, ids, ref, lim in data:
                    d, st, pr = run(ids, ref, lim)
                    tokens, steps, proposed = tokens + d, steps + st, proposed + pr
                    per_prompt.append({"prompt_id": pid, "tokens": d, "steps": st,
                                       "tau": d / st if st else 1.0, "draft_tokens": pr})
                rows.append({"suite": suite, "drafter": who, "setting": s.name, "params": asdict(s),
                             "prompts": len(data), "tokens": tokens, "steps": steps,
                             "tau": tokens / steps if steps else 1.0,
                             "draft_tokens_per_step": proposed / steps if steps else 0.0,
                             "seconds": time.perf_counter() - t0, "per_prompt": per_prompt})

    print("| suite | setting | prompts | tokens | ArcticInference τ | hvd `suffix` τ | hvd, ArcticInference's counting τ |")
    print("|---|---|---|---|---|---|---|")
    for r, h, c in zip(rows[::3], rows[1::3], rows[2::3]):
        print(f"| {r['suite']} | {r['setting']} | {r['prompts']} | {r['tokens']} | {r['tau']:.3f} | {h['tau']:.3f} "
              f"| {c['tau']:.3f} |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "results": rows,
            "peer": "arctic-inference 0.3.0 SuffixDecodingCache (csrc/suffix_decoding), fresh cache per prompt",
            "arctic_module": str(Path(ad.__file__).parent),
            "counting": "tau = tokens after the first / verification steps (first token from prefill), "
                        "as hvd bench --replay; drafts capped at limit - generated - 1",
            "max_new_tokens": a.max_new_tokens,
            "reference_store": str(store.path),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
