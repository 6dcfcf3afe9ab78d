"""The errors every layer may raise, each carrying one line for the user."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user (a prompt, a setting); the message is one line."""


class ModelError(Exception):
    """A model that cannot be found, read or run as asked; the message is one line for the user."""


class UnknownMethodError(ValueError):
    """A decoding method that is not registered."""


class MethodUnavailable(RuntimeError):
    """A registered method that cannot run here (an untrained or incompatible checkpoint);
    the message says what to do."""
