"""hvd: lossless speculative decoding (prompt lookup, suffix trees, hybrid verified decoding)."""
from hvd.engine import Chunk, Engine, Result
from hvd.errors import InputError

__all__ = ["Engine", "Result", "Chunk", "InputError"]
__version__ = "0.1.0"
