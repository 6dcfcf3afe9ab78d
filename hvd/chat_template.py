"""A model's chat template: whether it has a tool format, and a template given as a file.

A template has a tool format when it reads the `tools` variable that transformers'
`apply_chat_template(..., tools=...)` hands it (ChatML templates with tools, as Hermes' and
Qwen's, or Llama 3.1's): it then also renders an assistant turn's structured `tool_calls` and the
`tool` turns. hvd's server gives such a template the request's functions and the history as the
OpenAI messages carry it; a template that does not read `tools` (the default models') gets the
fallback prompt of hvd/serve/tools.py instead.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

from hvd.errors import InputError

# what transformers' template environment adds to Jinja that a template may use
_EXTENSIONS = ("jinja2.ext.loopcontrols",)
_PROBE = [{"role": "user", "content": "Hello."}]


def _parse(template: str):
    """Jinja's syntax tree of `template` (jinja2.TemplateSyntaxError if it is not Jinja)."""
    import jinja2

    return jinja2.Environment(extensions=list(_EXTENSIONS)).parse(template)


@functools.lru_cache(maxsize=8)
def reads_tools(template: Optional[str]) -> bool:
    """Whether `template` reads the `tools` it is given (False for none, or one Jinja cannot parse);
    parsed once per template, not per request."""
    if not template:
        return False
    import jinja2
    import jinja2.meta

    try:
        return "tools" in jinja2.meta.find_undeclared_variables(_parse(template))
    except jinja2.TemplateSyntaxError:
        return False


def read_template(path: str | Path) -> str:
    """A chat template from a Jinja file; InputError (one line) if it cannot be read or parsed."""
    import jinja2

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the chat template {path}: {e}") from None
    try:
        _parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise InputError(f"the chat template {path} is not valid Jinja: line {e.lineno}: {e.message}") from None
    return text


def install(tokenizer, template: str) -> None:
    """Make `template` the tokenizer's chat template, after checking that it renders one user
    message (InputError, one line, if it does not)."""
    before = getattr(tokenizer, "chat_template", None)
    tokenizer.chat_template = template
    try:
        tokenizer.apply_chat_template(_PROBE, add_generation_prompt=True, tokenize=False)
    except Exception as e:  # the template is the user's code
        tokenizer.chat_template = before
        raise InputError(f"the chat template does not render a user message: {' '.join(str(e).split())}") from None
