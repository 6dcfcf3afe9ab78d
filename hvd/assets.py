"""A model's learned parts, and where they live: keyed by the model's identity under
``$HVD_CACHE/assets/<key>/`` (written by `hvd prepare`, hvd/prepare.py).

| part          | file                      | without it                                            |
|---------------|---------------------------|-------------------------------------------------------|
| token classes | classes.npy               | computed from the tokenizer at load (then cached)     |
| tri-grams     | trigram.npz               | the shipped datastore (default model), else empty     |
| traces        | traces.npz                | -                                                     |
| predictor     | predictor/                | the shipped predictor (hvd/checkpoints/predictor)     |
| drafter       | dflash/ (`--drafter`)     | the shipped dflash (default model), else none         |

The shipped predictor reads only features that do not depend on the vocabulary (match
lengths and scores, positions, acceptance history, and character-class counts of the draft's
text — those are per token of *this* model's tokenizer, `classes`), so it serves any model
from its first request; online calibration (hvd/hybrid/calibration.py) corrects its scale,
and `hvd prepare` replaces it with one trained on the model's own traces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from hvd.errors import ModelError
from hvd.machine import cache_dir, fingerprint
from hvd.targets.loader import default_model_path

CONFIG_FILE, WEIGHTS_FILE = "dflash.json", "dflash.safetensors"  # a DFlash drafter's files in its folder


@dataclass(frozen=True)
class ModelAssets:
    key: str  # the model's identity: "smollm2-135m" for the default model, else "<name>-<hash>"
    directory: Path  # where its parts are cached
    default: bool  # the default model: the shipped datastore and predictor are its own

    @staticmethod
    def for_model(path: Path) -> "ModelAssets":
        """The assets of a resolved model path (`hvd.targets.loader.resolve`)."""
        try:
            default = path.resolve() == default_model_path().resolve()
        except ModelError:
            default = False
        if default:
            key = "smollm2-135m"
        else:
            probe = path / "config.json" if path.is_dir() else path
            st = probe.stat()
            key = f"{path.stem if path.is_file() else path.name}-{fingerprint(path.resolve(), st.st_size, st.st_mtime_ns, length=12)}"
        return ModelAssets(key, cache_dir() / "assets" / key, default)

    @property
    def classes_path(self) -> Path:
        return self.directory / "classes.npy"

    @property
    def trigram_path(self) -> Path:
        return self.directory / "trigram.npz"

    @property
    def traces_path(self) -> Path:
        return self.directory / "traces.npz"

    @property
    def predictor_path(self) -> Path:
        return self.directory / "predictor"

    @property
    def drafter_path(self) -> Path:
        return self.directory / "dflash"

    def own_drafter(self) -> Optional[Path]:
        """The model's own trained DFlash drafter, where `hvd prepare --drafter` made one."""
        d = self.drafter_path
        return d if (d / WEIGHTS_FILE).is_file() and (d / CONFIG_FILE).is_file() else None

    def own_predictor(self) -> Optional[Path]:
        """The model's own trained predictor, where `hvd prepare` made one."""
        return self.predictor_path if (self.predictor_path / "predictor.safetensors").is_file() else None

    def own_trigrams(self) -> Optional[Path]:
        return self.trigram_path if self.trigram_path.is_file() else None

    def token_classes(self, tokenizer, vocab_size: int,
                      compute: Callable[[object, int], np.ndarray]) -> np.ndarray:
        """(vocab, classes) character-class counts of every token's text, made by `compute`
        (hvd/hybrid/features.py's `vocab_classes`) once per model and cached."""
        try:
            classes = np.load(self.classes_path)
            if classes.shape[0] == vocab_size:
                return classes
        except (OSError, ValueError):
            pass
        classes = compute(tokenizer, vocab_size)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.classes_path.with_name(f"classes.tmp{id(classes)}.npy")
        np.save(tmp, classes)
        tmp.rename(self.classes_path)
        return classes
