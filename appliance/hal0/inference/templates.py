"""Chat templates: messages to the prompt text a model was trained on.

A model's template is its GGUF's Jinja template (`chat_format` unset) or a named llama-cpp-python
format. Either way the system prompt must reach the model: llama-cpp-python's `gemma` format
drops system messages without a word, so hal0 renders gemma itself and folds the system text into
the first user turn, as Gemma's own template does. A template that still loses the system text is
refused at load (and by `hal0 config validate`), never silently used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_PROBE = "hal0-system-probe-7c1f"


class TemplateError(ValueError):
    """The configured chat format cannot be used (unknown, or it drops the system prompt)."""


@dataclass(frozen=True)
class Rendered:
    prompt: str
    stop: tuple[str, ...]
    added_special: bool  # the text already holds BOS: tokenize without adding one


Formatter = Callable[[list[dict[str, Any]]], Rendered]


def _text(message: dict[str, Any]) -> str:
    return message.get("content") or ""


def render_gemma(messages: list[dict[str, Any]]) -> Rendered:
    """Gemma's turn format; system text opens the first user turn (Gemma's own template does this)."""
    system = "\n\n".join(_text(m) for m in messages if m["role"] == "system")
    turns: list[str] = []
    pending = system + "\n\n" if system else ""
    for message in messages:
        if message["role"] == "system":
            continue
        role = "model" if message["role"] == "assistant" else "user"
        text = _text(message)
        if role == "user" and pending:
            text, pending = pending + text, ""
        turns.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
    if pending:  # a system prompt with no user turn yet still reaches the model
        turns.append(f"<start_of_turn>user\n{pending.rstrip()}<end_of_turn>\n")
    return Rendered("".join(turns) + "<start_of_turn>model\n", ("<end_of_turn>",), False)


_OWN: dict[str, Formatter] = {"gemma": render_gemma}


def _named(name: str) -> Formatter:
    from llama_cpp import llama_chat_format

    if name in _OWN:
        return _OWN[name]
    function = None
    for candidate in (name.replace("-", "_"), name.replace("-", ""), name.replace("-", "_").replace(".", "_")):
        function = getattr(llama_chat_format, f"format_{candidate}", None)
        if function is not None:
            break
    if function is None:
        raise TemplateError(f"chat_format {name!r} is not a chat format hal0 can render")

    def render(messages: list[dict[str, Any]]) -> Rendered:
        result = function(messages=messages)
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return Rendered(result.prompt, tuple(stop), bool(result.added_special))

    return render


def _jinja(template: str, eos: str, bos: str) -> Formatter:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

    def render(messages: list[dict[str, Any]]) -> Rendered:
        result = formatter(messages=messages)
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return Rendered(result.prompt, tuple(stop), True)

    return render


def check_system(render: Formatter, name: str) -> None:
    """Refuse a template that renders a system message to nothing."""
    try:
        text = render([{"role": "system", "content": _PROBE}, {"role": "user", "content": "hi"}]).prompt
    except Exception as error:  # noqa: BLE001 - a template that raises on a system turn cannot carry one
        raise TemplateError(f"chat format {name!r} cannot carry a system prompt: {error}") from None
    if _PROBE not in text:
        raise TemplateError(f"chat format {name!r} drops the system prompt; set models[].chat_format to one that carries it")


def named_template(name: str) -> Formatter:
    """A named chat format, checked to carry the system prompt (no model file needed)."""
    render = _named(name)
    check_system(render, name)
    return render


def template_for(llama: Any) -> Formatter:
    """The template of a loaded Llama: its resolved chat_format (a name, or one of its GGUF's)."""
    name = llama.chat_format or "llama-2"
    if name.startswith("chat_template."):
        key = "tokenizer.chat_template" if name == "chat_template.default" else f"tokenizer.{name}"
        model = llama._model
        eos, bos = model.token_eos(), model.token_bos()
        render = _jinja(
            llama.metadata[key],
            model.token_get_text(eos) if eos != -1 else "",
            model.token_get_text(bos) if bos != -1 else "",
        )
    else:
        render = _named(name)
    check_system(render, name)
    return render


def template_stops(rendered: Rendered, extra: Sequence[str]) -> list[str]:
    """The stop strings of a rendered prompt: its template's end-of-turn strings, then the request's."""
    return [text for text in (*rendered.stop, *extra) if text]


