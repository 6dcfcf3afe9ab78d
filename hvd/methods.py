"""The one place that lists decoding methods, and the rule that picks the default one. `ar` is
plain decoding: no drafter. A hybrid's arms are built here and handed to it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from hvd.drafters.base import Drafter
from hvd.errors import MethodUnavailable, UnknownMethodError

if TYPE_CHECKING:
    from hvd.drafters.stores import SharedStores
    from hvd.targets.protocol import Target


@dataclass(frozen=True)
class Method:
    name: str
    help: str
    # Builds a fresh drafter for a target (model drafters read its weights; cache drafters
    # ignore it) and, optionally, the engine's shared cross-request stores (None: private
    # ones). None: no drafter (plain autoregressive decoding).
    make: Optional[Callable[..., Drafter]]


def _pld(target: "Target", stores: Optional["SharedStores"] = None) -> Drafter:
    from hvd.drafters.pld import PromptLookupDrafter

    return PromptLookupDrafter()


def _suffix(target: "Target", stores: Optional["SharedStores"] = None) -> Drafter:
    from hvd.drafters.suffix import SuffixDrafter

    return SuffixDrafter(store=None if stores is None else stores.responses)


def _aded(name: str, **config) -> Callable[["Target"], Drafter]:
    def make(target: "Target", stores: Optional["SharedStores"] = None) -> Drafter:
        from hvd.drafters.aded import AdedConfig, for_target

        return for_target(target, AdedConfig(**config), name, assets=None if stores is None else stores.assets)

    return make


def _layerskip(target: "Target", stores: Optional["SharedStores"] = None) -> Drafter:
    from hvd.drafters.layerskip import for_target

    return for_target(target)


def _dflash(name: str) -> Callable[["Target"], Drafter]:
    def make(target: "Target", stores: Optional["SharedStores"] = None) -> Drafter:
        from hvd.drafters.dflash import for_target

        own = stores.assets.own_drafter() if name == "dflash" and stores is not None and stores.assets else None
        return for_target(target, path=own, name=name)  # None: the packaged checkpoint hvd/checkpoints/<name>

    return make


CACHE_ARM = "suffix"
MODEL_ARM = "aded-greedy"  # a cheap chain: on CPUs big trees cost more than they add (docs/BENCHMARKS.md)


def _hybrid(name: str, **policy) -> Callable[["Target"], Drafter]:
    def make(target: "Target", stores: Optional["SharedStores"] = None) -> Drafter:
        from hvd.hybrid.drafter import build
        from hvd.hybrid.policy import PolicyConfig

        cache = get(CACHE_ARM).make(target, stores)
        model = get(MODEL_ARM).make(target, stores)
        return build(target, name, PolicyConfig(**policy), cache, model, stores=stores)

    return make


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ar", "plain autoregressive decoding, the baseline", None),
        Method("pld", "prompt lookup: copy after the latest n-gram match in prompt + output", _pld),
        Method("suffix", "suffix trees over this request and earlier responses (SuffixDecoding)", _suffix),
        Method("aded", "adaptive tri-grams searched by MCTS into draft trees (ADED)", _aded("aded")),
        Method("aded-noadapt", "ablation: aded without online adaptation", _aded("aded-noadapt", adapt=False)),
        Method("aded-greedy", "ablation: aded drafting one greedy tri-gram chain, no MCTS", _aded("aded-greedy", greedy=True)),
        Method("layerskip", "self-speculation: the target drafts a greedy chain with some of its layers skipped",
               _layerskip),
        Method("dflash", "DFlash block drafter (trained: positional weighting, first-error focal and chain losses), "
               "one forward drafts 15 tokens from the target's hidden states", _dflash("dflash")),
        Method("dflash-uniform", "ablation: dflash trained with the position-uniform loss", _dflash("dflash-uniform")),
        Method("hvd", "Hybrid Verified Decoding, cost-aware: per step the cache draft, the model drafter, both or none, "
               "by predicted accepted length and this machine's verify cost", _hybrid("hvd", rule="cost")),
        Method("hvd-static", "ablation: hvd with its policy as trained (no online calibration, no fallback to "
               "the best arm)", _hybrid("hvd-static", rule="cost", online=False)),
        Method("hvd-threshold", "HVD as published: the cache draft when its predicted accepted length > 6, else the "
               "model drafter", _hybrid("hvd-threshold", rule="threshold", threshold=6.0)),
        Method("rule-hybrid", "baseline hybrid: the cache draft when its suffix score >= 8, else the model drafter",
               _hybrid("rule-hybrid", rule="rule", score_threshold=8.0)),
    )
}


# The CLI's default: the fastest method, or level with it, on every dataset of the bf16 runs in docs/BENCHMARKS.md.
DEFAULT_METHOD = "hvd"
FALLBACK_METHOD = "suffix"  # where the default cannot run (its predictor fits another vocabulary)


def get(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
    return METHODS[name]


def default_method(engine) -> str:
    """The default method for `engine`'s model, or the fallback (with a note on stderr) where it
    cannot run: the HVD predictor ships for the default model's vocabulary."""
    import sys

    from hvd.hybrid.predictor import PredictorError

    try:
        engine.drafter(DEFAULT_METHOD)  # built once and kept by the engine
        return DEFAULT_METHOD
    except (PredictorError, MethodUnavailable) as e:
        print(f"hvd: note: using {FALLBACK_METHOD}, not {DEFAULT_METHOD}: {e}", file=sys.stderr)
        return FALLBACK_METHOD
