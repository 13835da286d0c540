"""What the request bodies of every dialect share, written once: the strict body base, a tool's name,
a function tool as inference takes it, the checks of a request's tools and tool_choice, and the chat
template options (chat_template_kwargs, reasoning_format) as fields any dialect adds in one line.

Chat completions (schemas.py), Responses (responses.py) and Messages (messages.py) spell their tools
differently; each hands its spelling to these functions, so a rule changed here changes for all three.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from hal0.agents.request import ReasoningFormat
from hal0.inference import Tool
from hal0.inference.templates import RESERVED_KWARGS

ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


def _unreserved(value: dict[str, Any] | None) -> dict[str, Any] | None:
    reserved = sorted(RESERVED_KWARGS & set(value or {}))
    if reserved:
        raise ValueError(f"{', '.join(reserved)} cannot be set here: hal0 sets them from the request")
    return value


# The template options a dialect takes, each one line in its body model (`chat_template_kwargs: ChatTemplateKwargs = None`).
ChatTemplateKwargs = Annotated[
    dict[str, Any] | None, AfterValidator(_unreserved),
    Field(description="Extra variables for the model's chat template (llama-server's), e.g. {\"enable_thinking\": false}."),
]
ReasoningFormatField = Annotated[
    Literal["auto", "deepseek", "none"] | None,
    Field(description="A thinking model's reasoning: split out as reasoning_content (auto, deepseek: the default) or left inline (none)."),
]


def reasoning_format_of(value: str | None) -> ReasoningFormat | None:
    """A body's reasoning_format as the request carries it: none, auto (deepseek is auto), or None when
    absent (the persona's default applies)."""
    if value is None:
        return None
    return "none" if value == "none" else "auto"


class Body(BaseModel):
    """A request body or part of one: unknown fields are refused (400 naming them), never ignored."""

    model_config = ConfigDict(extra="forbid")


def function_tool(name: str, description: str | None, parameters: dict[str, Any] | None, param: str) -> Tool:
    """A function tool as inference takes it; no parameters schema means no arguments. `param` is where
    the request held the schema, in its dialect's words, for the errors that name it."""
    return Tool(name, description or "", parameters if parameters is not None else {"type": "object", "properties": {}}, param=param)


def check_tool_choice(names: list[str], choice: str | None, named: str | None, *, distinct: str = "tools must have distinct names") -> None:
    """The checks every dialect makes of its tools and tool_choice (ValueError, which the body's parser turns
    into a 400 naming the field): distinct names, a tool_choice other than none only with tools, a named
    tool_choice one of the tools. `choice` is the mode as sent (None when absent), `named` the tool a
    tool_choice names; `distinct` says the first rule in the dialect's words."""
    if len(set(names)) != len(names):
        raise ValueError(distinct)
    if choice not in (None, "none") and not names:
        raise ValueError("tool_choice needs tools")
    if named is not None and named not in names:
        raise ValueError(f"tool_choice names {named!r}, which is not in tools")


def tool_choice_mode(choice: str | None, named: str | None, has_tools: bool) -> str:
    """tool_choice as inference takes it: the named tool, else none/auto/required (auto with tools when absent)."""
    if named is not None:
        return named
    return choice or ("auto" if has_tools else "none")
