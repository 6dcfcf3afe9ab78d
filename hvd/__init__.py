"""hvd: lossless speculative decoding (prompt lookup, suffix trees, hybrid verified decoding).

`Engine`, `Result` and `Chunk` load on first use, so a plugin that imports one of hvd's
drafters into another engine's process (hvd/integrations/) does not load hvd's own engine."""
from hvd.errors import InputError

__all__ = ["Engine", "Result", "Chunk", "InputError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("Engine", "Result", "Chunk"):
        from hvd import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'hvd' has no attribute {name!r}")
