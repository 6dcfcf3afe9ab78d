"""Turn timed runs into the metrics users compare methods by.

speedup       median over prompts of (method decode tok/s ÷ `ar` decode tok/s on that prompt),
              each tok/s the median over repeats; decode = after the first token.
e2e_speedup   the same ratio over whole requests (prefill included).
tau (τ)       mean accepted length: tokens after the first ÷ verification forwards (all prompts).
fwd_per_100   target forwards per 100 new tokens (100 / τ).
oracle_fraction  speedup ÷ the oracle's speedup on the same dataset.
draft_share   drafting seconds ÷ decode seconds.
exact         every output token-identical to `ar`'s greedy output.
ttft          median seconds to the first token.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from hvd.bench.peers import Run
from hvd.bench.runner import ORACLE, PromptRuns


@dataclass(frozen=True)
class Row:
    method: str
    dataset: str
    speedup: float
    e2e_speedup: float
    tau: Optional[float]
    fwd_per_100: Optional[float]
    exact: bool
    tokens_per_second: float
    ttft: float
    oracle_fraction: Optional[float]
    draft_share: float
    n_prompts: int

    def to_dict(self) -> dict:
        return asdict(self)


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def _e2e_tps(run: Run) -> float:
    return len(run.token_ids) / run.wall if run.wall > 0 else 0.0


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def summarize(results: Sequence[PromptRuns]) -> list[Row]:
    by_key: dict[tuple[str, str], list[PromptRuns]] = defaultdict(list)
    for pr in results:
        for m in pr.runs:
            by_key[(pr.dataset, m)].append(pr)
    rows = [_row(m, ds, prs) for (ds, m), prs in by_key.items()]
    oracle = {r.dataset: r.speedup for r in rows if r.method == ORACLE}
    return [
        Row(**{**r.to_dict(), "oracle_fraction": _ratio(r.speedup, oracle[r.dataset]) if r.dataset in oracle else None})
        for r in rows
    ]


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
               _median(tps), _median(ttft), None, _ratio(draft, decode), len(prompts))


def markdown(rows: Sequence[Row]) -> str:
    head = "| dataset | method | speedup | e2e speedup | τ | fwd/100 tok | tok/s | TTFT s | oracle frac | draft share | exact | prompts |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(rows, key=lambda r: (r.dataset, r.method != "ar", -r.speedup)):
        f = lambda x, p=2: "–" if x is None else f"{x:.{p}f}"
        lines.append(
            f"| {r.dataset} | {r.method} | {f(r.speedup)}x | {f(r.e2e_speedup)}x | {f(r.tau)} | {f(r.fwd_per_100, 1)} | "
            f"{f(r.tokens_per_second, 1)} | {f(r.ttft)} | {f(r.oracle_fraction)} | {f(r.draft_share * 100, 1)}% | "
            f"{'yes' if r.exact else 'NO'} | {r.n_prompts} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: str) -> None:
    """Grouped bars: speedup per dataset per method; the oracle drawn as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.dataset for r in rows})
    methods = [m for m in dict.fromkeys(r.method for r in rows) if m != ORACLE]
    get = {(r.dataset, r.method): r.speedup for r in rows}
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(datasets) * max(1, len(methods) / 3)), 4.5))
    for i, m in enumerate(methods):
        xs = [d + (i - (len(methods) - 1) / 2) * width for d in range(len(datasets))]
        ax.bar(xs, [get.get((ds, m), 0) for ds in datasets], width, label=m)
    if any(r.method == ORACLE for r in rows):
        ax.scatter(range(len(datasets)), [get.get((ds, ORACLE), 0) for ds in datasets], marker="_", s=2000,
                   color="black", linewidths=2, label="oracle (ceiling)", zorder=3)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel("decode speedup over ar (×)")
    ax.set_title("hvd bench: speedup per suite and method")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
