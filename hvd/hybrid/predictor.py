"""The accepted-length predictor: an MLP regressor on `features.FEATURES` (HVD's payoff model).

2 hidden layers x 256, ReLU, squared error on the accepted length a cache draft gets.
Training uses torch; inference is one compiled loop over the weights (`_mlp`), the feature
normalisation folded into the first layer: it runs once a step right after a verification
has streamed the target's weights through every cache, where each numpy call would pay for
its own cold code and data.
An artifact is a directory: ``predictor.safetensors`` (weights, feature mean/std and the
token character-class table of the model's vocabulary) + ``predictor.json`` (feature names,
model, training metrics).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from numba import njit

from hvd.errors import MethodUnavailable
from hvd.hybrid.features import FEATURES
from hvd.read_once import read_once

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "predictor"


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 256
    # Thousands of traced steps here, not the paper's millions: small batches and more epochs
    # (chosen by the error on held-out prompts).
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0


class PredictorError(MethodUnavailable, ValueError):
    """No usable predictor: the methods that need one cannot run here."""


@dataclass
class Predictor:
    """Predicts the accepted length of a cache draft from its feature vector."""

    weights: list[tuple[np.ndarray, np.ndarray]]  # per layer: W (in, out), b (out,)
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)
    classes: np.ndarray  # (vocab, n classes) uint8, see features.token_class_counts
    info: dict

    def __post_init__(self) -> None:
        # a feature constant in training (e.g. `source_global` in traces of fresh requests) taught
        # the net nothing: it reads as its training value; others are kept within CLIP std of it
        # (a net of ReLUs extrapolates linearly, so a value never seen in training can give an
        # absurd prediction). Both as bounds on the raw feature, the scaling folded into layer 0:
        # ((clip(x, lo, hi) - mean) * scale) @ W0 + b0 = clip(x, lo, hi) @ (scale W0) + b0'
        if len(self.weights) != 3 or self.weights[-1][0].shape[1] != 1:
            raise PredictorError("the HVD predictor must be an MLP with two hidden layers and one output")
        live = self.std > 1e-5
        reach = np.where(live, self.CLIP * self.std, 0.0)
        self._lo = (self.mean - reach).astype(np.float32)  # (F,)
        self._hi = (self.mean + reach).astype(np.float32)  # (F,)
        scale = np.where(live, 1.0 / np.where(live, self.std, 1.0), 0.0).astype(np.float32)  # (F,)
        (w0, b0), (w1, b1), (w2, b2) = self.weights
        self._w0 = np.ascontiguousarray(w0 * scale[:, None], dtype=np.float32)  # (F, H)
        self._b0 = (b0 - (self.mean * scale) @ w0).astype(np.float32)  # (H,)
        self._w1, self._b1 = np.ascontiguousarray(w1, dtype=np.float32), np.asarray(b1, dtype=np.float32)  # (H, H), (H,)
        self._w2, self._b2 = np.ascontiguousarray(w2[:, 0], dtype=np.float32), float(b2[0])  # (H,), ()

    CLIP = 6.0  # standard deviations

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x (B, F) or (F,) -> predicted accepted lengths (B,) or ()."""
        x = np.asarray(x, dtype=np.float32)
        rows = x.reshape(-1, x.shape[-1])  # (B, F)
        out = np.array([self.predict_one(r) for r in rows], dtype=np.float32)  # (B,)
        return out.reshape(x.shape[:-1])

    def predict_one(self, x: np.ndarray) -> float:
        """One (F,) float32 feature vector -> its predicted accepted length."""
        return _mlp(x, self._lo, self._hi, self._w0, self._b0, self._w1, self._b1, self._w2, self._b2)

    def save(self, out: Path) -> None:
        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean, "std": self.std, "classes": self.classes}
        for i, (w, b) in enumerate(self.weights):
            tensors[f"w{i}"], tensors[f"b{i}"] = np.ascontiguousarray(w), b
        save_file(tensors, str(out / "predictor.safetensors"))
        (out / "predictor.json").write_text(json.dumps({"features": list(FEATURES), **self.info}, indent=1) + "\n")


@njit(cache=True, fastmath=True)
def _mlp(x, lo, hi, w0, b0, w1, b1, w2, b2):
    """relu(relu(clip(x, lo, hi) @ w0 + b0) @ w1 + b1) @ w2 + b2 for one (F,) vector."""
    h0 = b0.copy()  # (H,)
    for i in range(x.shape[0]):
        v = min(max(x[i], lo[i]), hi[i])
        for j in range(h0.shape[0]):
            h0[j] += v * w0[i, j]
    h1 = b1.copy()  # (H,)
    for i in range(h0.shape[0]):
        if h0[i] > 0:  # relu: a dead unit adds nothing
            for j in range(h1.shape[0]):
                h1[j] += h0[i] * w1[i, j]
    out = b2
    for j in range(h1.shape[0]):
        if h1[j] > 0:
            out += h1[j] * w2[j]
    return out


def load(path: Optional[Path] = None) -> Predictor:
    """The predictor in `path` (default: the packaged one), read once per file version and
    shared by every drafter that uses it (it is read-only at inference)."""
    path = Path(path or DEFAULT_DIR).resolve()
    try:
        return read_once(_read, path, stamp=path / "predictor.safetensors")
    except OSError as e:
        raise PredictorError(f"cannot read the HVD predictor at {path}: {e}; train one with `hvd train predictor`") from e


def _read(path: Path) -> Predictor:
    from safetensors.numpy import load_file

    try:
        info = json.loads((path / "predictor.json").read_text())
        t = load_file(str(path / "predictor.safetensors"))
    except (OSError, ValueError) as e:
        raise PredictorError(f"cannot read the HVD predictor at {path}: {e}; train one with `hvd train predictor`") from e
    if tuple(info.get("features", ())) != FEATURES:
        raise PredictorError(f"the predictor at {path} was trained on other features; retrain it with `hvd train predictor`")
    n = sum(1 for k in t if k.startswith("w"))
    weights = [(t[f"w{i}"], t[f"b{i}"]) for i in range(n)]
    return Predictor(weights, t["mean"], t["std"], t["classes"], {k: v for k, v in info.items() if k != "features"})


def fit(x: np.ndarray, y: np.ndarray, classes: np.ndarray, cfg: TrainConfig = TrainConfig(), info: Optional[dict] = None) -> Predictor:
    """Train on features x (N, F) and accepted lengths y (N,)."""
    import torch

    torch.manual_seed(cfg.seed)
    mean = x.mean(axis=0).astype(np.float32)
    std = np.maximum(x.std(axis=0), 1e-6).astype(np.float32)
    xt = torch.from_numpy((x - mean) / std).float()  # (N, F)
    yt = torch.from_numpy(y).float()  # (N,)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], cfg.hidden), torch.nn.ReLU(),
        torch.nn.Linear(cfg.hidden, cfg.hidden), torch.nn.ReLU(),
        torch.nn.Linear(cfg.hidden, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(cfg.batch_size):
            loss = torch.nn.functional.mse_loss(net(xt[idx])[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in layers]
    return Predictor(weights, mean, std, classes, {"train": asdict(cfg), **(info or {})})


def precision_recall(pred: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    """Of "accepted >= threshold": precision and recall of predicted >= threshold."""
    said, true = pred >= threshold, y >= threshold
    hits = float((said & true).sum())
    return hits / max(float(said.sum()), 1.0), hits / max(float(true.sum()), 1.0)
