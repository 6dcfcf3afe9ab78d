"""Turn timed runs (or replays) into the metrics users compare methods by.

speedup       median over prompts of (method decode tok/s ÷ `ar` decode tok/s on that prompt),
              each tok/s the median over repeats; decode = after the first token.
speedup_geomean  the geometric mean of the same per-prompt ratios (`prompt_speedups`, in prompt
              order): steadier than the median where a suite's prompts fall into groups far
              apart (chat: MT-Bench's and ShareGPT's speedups differ widely, so the median of the
              pooled prompts lands in the gap and is set by one or two prompts at its edges;
              docs/BENCHMARKS.md).
e2e_speedup   the same ratio over whole requests (prefill included).
tau (τ)       mean accepted length: tokens after the first ÷ verification forwards (all prompts).
fwd_per_100   target verification forwards per 100 tokens after the first (100 / τ).
oracle_fraction  speedup ÷ the oracle's speedup on the same dataset.
draft_share   drafting seconds ÷ decode seconds.
draft_ms_per_step  drafting milliseconds per verification step.
exact         every output token-identical to `ar`'s greedy output.
ttft          median seconds to the first token.

A suite whose prompts span several datasets (chat: MT-Bench and ShareGPT) also gets a row of
its own, dataset "<suite> (all)": the same metrics over all of its prompts pooled.

Replay rows (mode "replay") carry τ, fwd_per_100 and draft_ms_per_step only: the target never
ran, so every speed, exactness and oracle-fraction field is None. docs/BENCHMARKS.md documents
every column and the JSON schema.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from hvd.bench.replay_runner import ReplayRun
from hvd.bench.run import Run
from hvd.bench.runner import ORACLE, PromptRuns

TIMED, REPLAY = "timed", "replay"


@dataclass(frozen=True)
class Row:
    """One (method, dataset) line of the table and of the JSON "results" list."""

    method: str
    dataset: str
    speedup: Optional[float]  # None in replay
    e2e_speedup: Optional[float]  # None in replay
    tau: Optional[float]  # None for peers (forwards not known)
    fwd_per_100: Optional[float]
    exact: Optional[bool]  # None in replay
    tokens_per_second: Optional[float]  # None in replay
    ttft: Optional[float]  # None in replay
    oracle_fraction: Optional[float]  # None in replay and without an oracle row
    draft_share: Optional[float]  # None in replay and for peers
    n_prompts: int
    draft_ms_per_step: Optional[float] = None  # None for peers
    mode: str = TIMED  # "timed" | "replay"
    arm_share: Optional[dict[str, float]] = None  # share of steps per drafter, when a method used several
    speedup_geomean: Optional[float] = None  # None in replay
    prompt_speedups: Optional[list[float]] = None  # per prompt, in prompt order; None in replay
    forced_per_request: Optional[float] = None  # tokens a grammar forced, mean per request (None: none)

    def to_dict(self) -> dict:
        return asdict(self)


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def _geomean(xs: Sequence[float]) -> float:
    """The geometric mean of positive numbers (0.0 when any is not, or there are none)."""
    return statistics.geometric_mean(xs) if xs and min(xs) > 0 else 0.0


def _e2e_tps(run: Run) -> float:
    return len(run.token_ids) / run.wall if run.wall > 0 else 0.0


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def suite_label(suite: str) -> str:
    return f"{suite} (all)"


def summarize(results: Sequence[PromptRuns], suites: Optional[dict[str, str]] = None) -> list[Row]:
    """Rows per (dataset, method); `suites` (dataset -> suite) adds a pooled row per method for
    each suite that spans more than one dataset."""
    suites = suites or {}
    spans: dict[str, set[str]] = defaultdict(set)  # suite -> its datasets in these results
    for pr in results:
        if pr.dataset in suites:
            spans[suites[pr.dataset]].add(pr.dataset)
    by_key: dict[tuple[str, str], list[PromptRuns]] = defaultdict(list)
    for pr in results:
        suite = suites.get(pr.dataset)
        groups = [pr.dataset] + ([suite_label(suite)] if len(spans.get(suite, ())) > 1 else [])
        for group in groups:
            for m in pr.runs:
                by_key[(group, m)].append(pr)
    rows = [_row(m, ds, prs) for (ds, m), prs in by_key.items()]
    oracle = {r.dataset: r.speedup for r in rows if r.method == ORACLE}
    return [
        Row(**{**r.to_dict(), "oracle_fraction": _ratio(r.speedup, oracle[r.dataset]) if r.dataset in oracle else None})
        for r in rows
    ]


def summarize_replay(runs: Sequence[ReplayRun]) -> list[Row]:
    """Rows of a replay: τ, forwards per 100 tokens and drafting time per step, over all
    prompts of a (dataset, method); every speed field None."""
    by_key: dict[tuple[str, str], list[ReplayRun]] = defaultdict(list)
    for r in runs:
        by_key[(r.dataset, r.method)].append(r)
    rows = []
    for (dataset, method), group in by_key.items():
        steps = sum(len(r.records) for r in group)
        decoded = sum(s.committed for r in group for s in r.records)
        draft = sum(s.draft_seconds for r in group for s in r.records)
        tau = decoded / steps if steps else None
        rows.append(Row(method, dataset, None, None, tau, 100 / tau if tau else None, None, None, None, None, None,
                        len({r.prompt_id for r in group}), 1000 * draft / steps if steps else None, REPLAY))
    return rows


def _row(method: str, dataset: str, prompts: list[PromptRuns]) -> Row:
    speedups, e2e, tps, ttft = [], [], [], []
    decoded = steps = 0
    draft = decode = 0.0
    exact = True
    for pr in prompts:
        runs, base = pr.runs[method], pr.runs["ar"]
        tps.append(_median([r.decode_tps for r in runs]))
        speedups.append(_ratio(tps[-1], _median([r.decode_tps for r in base])))
        e2e.append(_ratio(_median([_e2e_tps(r) for r in runs]), _median([_e2e_tps(r) for r in base])))
        ttft.append(_median([r.ttft for r in runs]))
        exact &= all(r.token_ids == pr.reference for r in runs)
        for r in runs:
            if r.steps:
                decoded, steps = decoded + len(r.token_ids) - 1, steps + r.steps
            draft, decode = draft + r.draft_seconds, decode + r.wall - r.ttft
    tau = decoded / steps if steps else None
    return Row(method, dataset, _median(speedups), _median(e2e), tau, 100 / tau if tau else None, exact,
               _median(tps), _median(ttft), None, _ratio(draft, decode) if steps else None, len(prompts),
               1000 * draft / steps if steps else None, arm_share=_arm_share([r for pr in prompts for r in pr.runs[method]]),
               speedup_geomean=_geomean(speedups), prompt_speedups=speedups, forced_per_request=_forced(prompts, method))


def _forced(prompts: list[PromptRuns], method: str) -> Optional[float]:
    runs = [r for pr in prompts for r in pr.runs[method]]
    forced = sum(r.forced for r in runs)
    return forced / len(runs) if forced else None


def _arm_share(runs: Sequence[Run]) -> Optional[dict[str, float]]:
    counts: dict[str, int] = defaultdict(int)
    for r in runs:
        for name, n in r.sources.items():
            counts[name] += n
    total = sum(counts.values())
    if len(counts) < 2 or not total:
        return None
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def _fmt(x: Optional[float], places: int = 2, unit: str = "") -> str:
    return "–" if x is None else f"{x:.{places}f}{unit}"


def markdown(rows: Sequence[Row]) -> str:
    """The table; "–" marks what was not measured (peers' τ; speeds and exactness in replay)."""
    head = ("| dataset | method | speedup | e2e speedup | τ | fwd/100 tok | tok/s | TTFT s | oracle frac "
            "| draft share | draft ms/step | exact | prompts |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = lambda r: (r.dataset, r.method != "ar", -(r.speedup if r.speedup is not None else r.tau or 0))
    for r in sorted(rows, key=order):
        share = None if r.draft_share is None else r.draft_share * 100
        exact = "–" if r.exact is None else "yes" if r.exact else "NO"
        lines.append(
            f"| {r.dataset} | {r.method} | {_fmt(r.speedup, unit='x')} | {_fmt(r.e2e_speedup, unit='x')} | {_fmt(r.tau)} | "
            f"{_fmt(r.fwd_per_100, 1)} | {_fmt(r.tokens_per_second, 1)} | {_fmt(r.ttft)} | {_fmt(r.oracle_fraction)} | "
            f"{_fmt(share, 1, '%')} | {_fmt(r.draft_ms_per_step, 3)} | {exact} | {r.n_prompts} |"
        )
    forced = [r for r in sorted(rows, key=order) if r.forced_per_request]
    if forced:
        lines.append("\ntokens a grammar forced, per request (`+gd`: grammar-aware drafting):")
        lines += [f"- {r.method} on {r.dataset}: {r.forced_per_request:.1f}" for r in forced]
    arms = [r for r in sorted(rows, key=order) if r.arm_share]
    if arms:
        lines.append("\nshare of steps per drafter (hybrids; `ar`: a plain step, no draft verified):")
        lines += [f"- {r.method} on {r.dataset}: " + ", ".join(f"{k} {v:.0%}" for k, v in r.arm_share.items()) for r in arms]
    if rows and all(r.mode == REPLAY for r in rows):
        lines.append("\nreplay: acceptance against recorded `ar` outputs; the target did not run, so speedups, "
                     "tok/s, TTFT, draft share and exactness are not measured (–).")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: str) -> None:
    """Grouped bars: speedup (τ for a replay) per dataset per method; the oracle drawn as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.dataset for r in rows})
    methods = [m for m in dict.fromkeys(r.method for r in rows) if m != ORACLE]
    replayed = bool(rows) and all(r.mode == REPLAY for r in rows)
    get = {(r.dataset, r.method): (r.tau if replayed else r.speedup) or 0 for r in rows}
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(min(15.0, 4 + 0.25 * len(datasets) * max(len(methods), 4)), 6))
    for i, m in enumerate(methods):
        xs = [d + (i - (len(methods) - 1) / 2) * width for d in range(len(datasets))]
        ax.bar(xs, [get.get((ds, m), 0) for ds in datasets], width, label=m)
    if any(r.method == ORACLE for r in rows):  # a line across each group at the oracle's value
        ys = [get.get((ds, ORACLE), 0) for ds in datasets]
        ax.hlines(ys, [d - 0.42 for d in range(len(datasets))], [d + 0.42 for d in range(len(datasets))],
                  color="black", linewidth=2, label="oracle (ceiling)", zorder=3)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(datasets)), datasets, rotation=15 if len(datasets) > 4 else 0)
    ax.set_ylabel("τ, mean accepted length (replay)" if replayed else "decode speedup over ar (×)")
    ax.set_title("hvd bench --replay: τ per suite and method" if replayed else "hvd bench: speedup per suite and method")
    ax.legend(fontsize=8, ncols=min(6, len(methods) + 1), loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps the legend below the axes
    plt.close(fig)
