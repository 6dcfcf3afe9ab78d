"""`hvd trace` and `hvd train predictor`: record HVD traces, fit and evaluate the predictor."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from hvd.hybrid import predictor as P
from hvd.hybrid.features import vocab_classes
from hvd.hybrid.trace import TraceConfig, Traces, collect, split_by_prompt

DEFAULT_TRACES = Path("traces") / "hvd-traces.npz"


def trace(engine, cfg: TraceConfig, out: Path, quiet: bool = False) -> Traces:
    from rich.progress import Progress

    from hvd.offline.references import ReferenceStore
    from hvd.data.suites import load_suite
    from hvd import methods
    from hvd.hybrid.drafter import build
    from hvd.hybrid.policy import PolicyConfig


    prompts = [p for s in cfg.suites for p in load_suite(s, split="train", limit=cfg.limit)]
    store = ReferenceStore.for_target(engine.target)
    classes = engine.stores.classes
    if classes is None:
        classes = vocab_classes(engine.tokenizer, engine.target.vocab_size)

    def make():  # fresh per prompt: no help from other prompts' outputs; the model's own datastore
        stores = engine.stores.fresh()
        stores.classes = classes
        cache = methods.get(methods.CACHE_ARM).make(engine.target, stores)
        model = methods.get(cfg.model_arm).make(engine.target, stores)
        return build(engine.target, "trace", PolicyConfig(rule="rule"), cache, model, stores=stores)

    with Progress(transient=True) as bar:
        task = bar.add_task("tracing (records ar outputs the first time)", total=len(prompts))
        traces = collect(engine, prompts, make, cfg.max_new_tokens, store, lambda: bar.advance(task))
    traces.save(out)
    np.save(out.with_suffix(".classes.npy"), classes)
    out.with_suffix(".json").write_text(json.dumps(provenance(engine, cfg, len(prompts)), indent=1) + "\n")
    if not quiet:
        print(f"{len(traces.y)} steps from {len(prompts)} train prompts ({', '.join(cfg.suites)}) -> {out}")
    return traces


def provenance(engine, cfg: TraceConfig, prompts: int) -> dict:
    """Where traces come from: the model, the target that ran it, this machine, the prompts."""
    import torch

    from hvd.machine import cpu_name

    assets = engine.stores.assets
    return {"model": assets.key if assets is not None else engine.target.fingerprint,
            "target": type(engine.target).__name__, "dtype": engine.target.precision, "cpu": cpu_name(),
            "threads": torch.get_num_threads(), "suites": list(cfg.suites), "prompts": prompts,
            "max_new_tokens": cfg.max_new_tokens, "model_arm": cfg.model_arm,
            "recorded": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def train(traces_path: Path, out: Path, cfg: P.TrainConfig, threshold: float = 6.0, quiet: bool = False) -> dict:
    traces = Traces.load(traces_path)
    classes = np.load(traces_path.with_suffix(".classes.npy"))
    fit_mask, held_mask = split_by_prompt(traces)
    t0 = time.perf_counter()
    model = P.fit(traces.x[fit_mask], traces.y[fit_mask], classes, cfg)
    seconds = time.perf_counter() - t0
    report = evaluate(model, traces, held_mask, threshold)
    report.update(train_steps=int(fit_mask.sum()), train_seconds=round(seconds, 1), traces=str(traces_path))
    try:  # traces recorded before provenance was kept have none
        report["provenance"] = json.loads(traces_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        pass
    model.info.update(report)
    model.save(out)
    if not quiet:
        print(json.dumps(report, indent=1))
    return report


def evaluate(model: P.Predictor, traces: Traces, mask: np.ndarray, threshold: float) -> dict:
    """Held-out quality: precision/recall of "accepted >= threshold", per suite and overall."""
    pred = model.predict(traces.x[mask])
    y = traces.y[mask]
    per = {}
    for name in sorted(set(traces.dataset[mask].tolist())):
        m = traces.dataset[mask] == name
        p, r = P.precision_recall(pred[m], y[m], threshold)
        per[name] = {"precision": round(p, 3), "recall": round(r, 3), "steps": int(m.sum()),
                     "positive_share": round(float((y[m] >= threshold).mean()), 3)}
    p, r = P.precision_recall(pred, y, threshold)
    x1 = traces.x[mask][:1]
    t0 = time.perf_counter()
    for _ in range(1000):
        model.predict(x1[0])
    return {"threshold": threshold, "held_out_steps": int(mask.sum()), "precision": round(p, 3),
            "recall": round(r, 3), "mse": round(float(np.mean((pred - y) ** 2)), 3),
            "predict_microseconds": round((time.perf_counter() - t0) * 1e3, 1), "per_suite": per}
