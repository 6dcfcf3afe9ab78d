"""Shared value types of one decode step.

Terms, defined once for the whole project
-----------------------------------------
draft      Tokens a drafter proposes after the last committed token, as a tree:
           ``tokens[i]`` hangs under ``parents[i]`` (``-1`` = the last committed token,
           the *root*). A chain is the tree ``parents = [-1, 0, 1, ...]``.
accepted   Draft tokens the target confirmed in one verification forward (0 .. depth).
bonus      The one token the target itself produces after the accepted path, always
           exactly one per verification forward.
tau (τ)    Mean accepted length = new tokens / target verification forwards
           = mean over steps of (accepted + 1). ``ar`` has τ = 1.0.
step       One target verification forward (prefill excluded).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence



def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class DraftFeatures:
    """What a drafter says of one draft, read by the hybrid's predictor and policy; a drafter
    leaves what it does not measure at its default."""

    score: float = 0.0  # cache drafts: the matched continuation's share of occurrences; sized drafts: summed node scores
    match_length: float = 0.0  # tokens of context the cache draft matched
    source_global: float = 0.0  # 1.0: matched in the cross-request store, 0.0: in this request
    support: float = 0.0  # occurrences of the matched suffix
    draft_length: float = 0.0  # nodes proposed
    candidates: float = 0.0  # nodes searched before sizing
    expected_accepted: Optional[float] = None  # the accepted length the sized draft's calibrated probabilities expect
    iterations: float = 0.0  # search iterations (ADED)
    root_visits: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @staticmethod
    def from_dict(d: dict) -> "DraftFeatures":
        known = {f.name for f in dataclasses.fields(DraftFeatures)}
        return DraftFeatures(**{k: float(v) for k, v in d.items() if k in known and v is not None})


NO_FEATURES = DraftFeatures()


@dataclass(frozen=True)
class Draft:
    """A token tree proposed by a drafter. Nodes are in topological order."""

    tokens: tuple[int, ...]  # (n,) proposed token ids
    parents: tuple[int, ...]  # (n,) index of each node's parent in `tokens`; -1 = root
    features: DraftFeatures = NO_FEATURES
    source: Optional[str] = None  # which drafter proposed it, when a method combines several

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.parents):
            raise ValueError("draft tokens and parents differ in length")
        for i, p in enumerate(self.parents):
            if not -1 <= p < i:
                raise ValueError(f"draft node {i} has parent {p}: parents must precede children")

    @staticmethod
    def chain(tokens: Sequence[int], **features: float) -> "Draft":
        toks = tuple(int(t) for t in tokens)
        return Draft(toks, tuple(range(-1, len(toks) - 1)), DraftFeatures(**features) if features else NO_FEATURES)

    @staticmethod
    def empty() -> "Draft":
        return Draft((), ())

    def __len__(self) -> int:
        return len(self.tokens)

    def depths(self) -> list[int]:
        """Depth of each node (a child of the root has depth 1)."""
        return list(self._depths)

    @functools.cached_property
    def _depths(self) -> tuple[int, ...]:
        d: list[int] = []
        for p in self.parents:
            d.append(1 if p < 0 else d[p] + 1)
        return tuple(d)

    @functools.cached_property
    def is_chain(self) -> bool:
        """One path from the root: node i hangs under node i - 1."""
        return all(p == i - 1 for i, p in enumerate(self.parents))

    def max_depth(self) -> int:
        return len(self) if self.is_chain else max(self._depths, default=0)

    def accepted_path(self, continuation: Sequence[int]) -> list[int]:
        """Node indices of the path greedy verification accepts when the target's next tokens
        are `continuation`: from the root, the first child (lowest index) carrying the next
        token, then its first such child, and so on (the rule of hvd.verify.verify_greedy).
        With distinct siblings, as drafters produce, this is the deepest matching root path."""
        if self.is_chain:
            return list(range(shared_prefix(continuation, self.tokens)))
        children: dict[int, list[int]] = {}
        for i, p in enumerate(self.parents):
            children.setdefault(p, []).append(i)
        path: list[int] = []
        node = -1
        while len(path) < len(continuation):
            want = continuation[len(path)]
            node = next((c for c in children.get(node, ()) if self.tokens[c] == want), -2)
            if node == -2:
                break
            path.append(node)
        return path

    def matched(self, continuation: Sequence[int]) -> int:
        """The accepted length this draft gets when `continuation` is what the target produces."""
        return len(self.accepted_path(continuation))

    def union(self, other: "Draft") -> "Draft":
        """Both trees under one root, equal tokens under an equal parent merged into one node.
        Features and source are this draft's."""
        tokens, parents = list(self.tokens), list(self.parents)
        index = {(p, t): i for i, (t, p) in enumerate(zip(tokens, parents))}
        remap: list[int] = []
        for t, p in zip(other.tokens, other.parents):
            key = (-1 if p < 0 else remap[p], t)
            if key not in index:
                index[key] = len(tokens)
                tokens.append(t)
                parents.append(key[0])
            remap.append(index[key])
        return Draft(tuple(tokens), tuple(parents), self.features, self.source)

    def truncate(self, max_depth: int) -> "Draft":
        """Drop nodes deeper than `max_depth` (keeps topological order and indices compact)."""
        if self.is_chain:
            return self.head(max(max_depth, 0))
        if self.max_depth() <= max_depth:
            return self
        depth = self.depths()
        return self.keep([i for i in range(len(self)) if depth[i] <= max_depth])

    def keep(self, nodes: Sequence[int]) -> "Draft":
        """The nodes `nodes` (ascending, each one's parent among them), indices made compact."""
        if len(nodes) == len(self):
            return self
        new_index = {old: new for new, old in enumerate(nodes)}
        parents = tuple(-1 if self.parents[i] < 0 else new_index[self.parents[i]] for i in nodes)
        return Draft(tuple(self.tokens[i] for i in nodes), parents, self.features, self.source)

    def under(self, chain: Sequence[int]) -> "Draft":
        """`chain` from the root, then this tree hung under its last token."""
        if not chain:
            return self
        n = len(chain)
        parents = tuple(range(-1, n - 1)) + tuple(n - 1 if p < 0 else p + n for p in self.parents)
        return Draft(tuple(chain) + self.tokens, parents, self.features, self.source)

    def head(self, n: int) -> "Draft":
        """The first `n` nodes (parents precede children, so they form a rooted subtree)."""
        if len(self) <= n:
            return self
        return Draft(self.tokens[:n], self.parents[:n], self.features, self.source)


@dataclass(frozen=True)
class StepStats:
    """What one verification step did."""

    drafter: str  # name of the drafter that proposed (``ar`` when none)
    draft_len: int  # nodes in the draft tree
    accepted: int  # draft tokens accepted (the bonus token is not counted)
    draft_seconds: float
    verify_seconds: float
    forced: int = 0  # tokens a grammar allowed alone, verified before the draft (not in draft_len or accepted)


@dataclass(frozen=True)
class CurveInfo:
    """Where a curve came from, for the stats and the metrics: when and under what load it was
    measured, and what became of it at this process's start."""

    key: str  # the cache file's name: target, kernels, CPU, threads, shape
    made_at: float  # Unix time of the measurement
    load: float  # the 1-minute load average when it was measured (os.getloadavg)
    cpu_share: float  # the process's CPU seconds per wall second per thread while it was timed
    status: str  # "measured" (here, now) | "cached" (read and checked) | "re-measured" | "provisional"
    reason: str = ""  # why a cached curve was measured again, or why a new one is provisional

    def age_seconds(self, now: Optional[float] = None) -> float:
        return max((time.time() if now is None else now) - self.made_at, 0.0)

    def to_dict(self) -> dict:
        return {"key": self.key, "status": self.status, "age_seconds": round(self.age_seconds(), 1),
                "load": round(self.load, 2), "cpu_share": round(self.cpu_share, 3),
                **({"reason": self.reason} if self.reason else {})}


@dataclass(frozen=True)
class CalibrationSnapshot:
    """What a cost calibrator knows: the curve it corrects (its provenance: None for a curve made
    in code), the ratio (realised / curve seconds) and the verifies seen per size bucket, and
    the overall ratio."""

    curve: Optional[CurveInfo]
    size_edges: tuple[int, ...]
    ratios: tuple[float, ...]
    steps: tuple[int, ...]
    overall: float

    def to_dict(self) -> dict:
        d = {"ratios": list(self.ratios), "steps": list(self.steps), "overall": self.overall,
             "size_edges": list(self.size_edges)}
        if self.curve is not None:
            d["curve"] = self.curve.to_dict()
        return d


@dataclass(frozen=True)
class AcceptanceSnapshot:
    """An online acceptance curve (`hvd/hybrid/calibration.py`): per prediction bin the accepted
    length a draft of the modelled depth is expected to get, the same per shallower depth
    class, and the steps each bin has seen."""

    expected_accepted: tuple[float, ...]
    expected_accepted_at_depth: dict[int, tuple[float, ...]]
    steps: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"expected_accepted": list(self.expected_accepted),
                "expected_accepted_at_depth": {str(d): list(v) for d, v in self.expected_accepted_at_depth.items()},
                "steps": list(self.steps)}


@dataclass(frozen=True)
class ModesSnapshot:
    """A request's choice between the policy and its fixed modes: the mode it runs now, steps
    per mode, and each measured mode's decayed tokens per second."""

    best: str
    steps: dict[str, int]
    tokens_per_second: dict[str, float]

    def to_dict(self) -> dict:
        return {"best": self.best, "steps": dict(self.steps), "tokens_per_second": dict(self.tokens_per_second)}


@dataclass(frozen=True)
class OnlineSnapshot:
    """What an online-learning drafter knew at the end of a generation (the stats' and
    /metrics' `calibration`); a drafter fills in what it learns."""

    verify_cost: Optional[CalibrationSnapshot] = None
    acceptance: Optional[AcceptanceSnapshot] = None
    model_acceptance: Optional[AcceptanceSnapshot] = None
    step_overhead_ms: Optional[float] = None
    modes: Optional[ModesSnapshot] = None

    def to_dict(self) -> dict:
        out: dict = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = v if isinstance(v, float) else v.to_dict()
        return out


@dataclass
class GenerationStats:
    """Statistics of one generation. See the module docstring for the terms."""

    method: str
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0  # prompt forward, which yields the first new token
    wall_seconds: float = 0.0  # whole request, prefill included
    steps: list[StepStats] = field(default_factory=list)
    finish_reason: str = "length"  # length | eos | stop
    target: str = ""  # which target computed it, e.g. "ExactLlamaTarget"
    dtype: str = ""  # what its weights compute in: "int8", "bfloat16", "float32"
    calibration: Optional[OnlineSnapshot] = None  # what an online-learning drafter knew at the end (hvd)
    prompt_tokens_reused: int = 0  # prompt tokens whose keys an earlier request's cache held (generate_many)

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def decode_seconds(self) -> float:
        return max(self.wall_seconds - self.prefill_seconds, 0.0)

    @property
    def mean_accepted_length(self) -> float:
        """τ: tokens produced by verification steps per step (1.0 for ``ar``)."""
        decoded = self.new_tokens - 1  # the first token comes from prefill
        return decoded / self.n_steps if self.n_steps else 1.0

    @property
    def tokens_per_second(self) -> float:
        """Decode rate: tokens after the first ÷ seconds after the first token."""
        decoded = self.new_tokens - 1
        return decoded / self.decode_seconds if decoded > 0 and self.decode_seconds > 0 else 0.0

    @property
    def draft_seconds(self) -> float:
        return sum(s.draft_seconds for s in self.steps)

    @property
    def forced_tokens(self) -> int:
        """Tokens a grammar forced (committed without a choice), over all steps."""
        return sum(s.forced for s in self.steps)

    @property
    def verify_seconds(self) -> float:
        return sum(s.verify_seconds for s in self.steps)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "steps": self.n_steps,
            "mean_accepted_length": self.mean_accepted_length,
            "tokens_per_second": self.tokens_per_second,
            "prefill_seconds": self.prefill_seconds,
            "prompt_tokens_reused": self.prompt_tokens_reused,
            "decode_seconds": self.decode_seconds,
            "wall_seconds": self.wall_seconds,
            "draft_seconds": self.draft_seconds,
            "verify_seconds": self.verify_seconds,
            "draft_share": self.draft_seconds / self.decode_seconds if self.decode_seconds else 0.0,
            "finish_reason": self.finish_reason,
            "target": self.target,
            "dtype": self.dtype,
            "accepted_per_step": [s.accepted for s in self.steps],
            "drafter_per_step": [s.drafter for s in self.steps],
            **({"forced_tokens": self.forced_tokens} if self.forced_tokens else {}),
            **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {}),
        }
