"""The OpenAI Agents SDK with hal0 as its model and hal0's own /mcp/memory as its MCP server.

The agent's tool calls come back from hal0 as `tool_calls`, the SDK runs them through MCP, and so
through hal0's policy: `remember` (allowed) stores an item in the agent's namespace, `forget_all`
(ask) comes back pending for a human. An agent with a pydantic output_type gets a parsed object
(response_format json_schema), with tools too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pydantic
import pytest
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
from agents.mcp import MCPServerStreamableHttp
from openai import AsyncOpenAI

from tests.conftest import Server
from tests.integration.mcp_helpers import memory_on

AGENT = "scribe"
# The random model's free-text strings rarely end on their own; favouring the closing quote a little
# (token 5 + 0x22) keeps them short. The grammar still decides where a quote may go; the seed keeps
# the run reproducible.
SHORT_STRINGS = {"extra_body": {"logit_bias": {"39": 1.5}, "seed": 11}}


@pytest.fixture
def agent_server(start_server: Callable[..., Server], tiny_model: Path, tmp_path: Path) -> Server:
    model = {"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 4096, "n_threads": 1}
    return start_server(memory=memory_on(tmp_path), models=[model])


def hal0_model(server: Server) -> OpenAIChatCompletionsModel:
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    return OpenAIChatCompletionsModel(model="tiny", openai_client=client)


async def run_tool_agent(server: Server, tool: str) -> str:
    params = {"url": f"{server.url}/mcp/memory", "headers": {"X-hal0-Agent": AGENT}, "timeout": 30}
    async with MCPServerStreamableHttp(params=params, cache_tools_list=True, client_session_timeout_seconds=60) as memory:
        agent = Agent(
            name=AGENT,
            instructions="You keep notes for the user with your memory tools.",
            model=hal0_model(server),
            mcp_servers=[memory],
            model_settings=ModelSettings(tool_choice=tool, temperature=1.0, max_tokens=400, **SHORT_STRINGS),
            tool_use_behavior="stop_on_first_tool",
        )
        result = await asyncio.wait_for(Runner.run(agent, "Remember that the meeting moved to Friday.", max_turns=2), 300)
        return str(result.final_output)


def test_an_agent_remembers_through_hal0_mcp_with_hal0_as_its_model(agent_server: Server) -> None:
    output = asyncio.run(run_tool_agent(agent_server, "remember"))
    assert '"id"' in output  # remember's result: the stored item
    mine = httpx.get(f"{agent_server.url}/api/memory", headers={"X-hal0-Agent": AGENT}, timeout=30).json()
    others = httpx.get(f"{agent_server.url}/api/memory", headers={"X-hal0-Agent": "someone-else"}, timeout=30).json()
    assert len(mine["items"]) == 1 and mine["items"][0]["id"] in output
    assert others["items"] == []


def test_an_agents_forget_all_waits_for_a_human(agent_server: Server) -> None:
    output = asyncio.run(run_tool_agent(agent_server, "forget_all"))
    assert "pending" in output
    queue = httpx.get(f"{agent_server.url}/api/approvals", params={"state": "pending"}, timeout=30).json()
    assert [(item["agent"], item["tool"]) for item in queue["approvals"]] == [(AGENT, "memory:forget_all")]


class Note(pydantic.BaseModel):
    title: str = pydantic.Field(max_length=20)
    priority: int = pydantic.Field(ge=1, le=3)
    done: bool


def test_an_agent_with_an_output_type_gets_a_parsed_object(agent_server: Server) -> None:
    agent = Agent(
        name=AGENT, instructions="Turn the request into a note.", model=hal0_model(agent_server), output_type=Note,
        model_settings=ModelSettings(temperature=0, max_tokens=200),
    )
    result = asyncio.run(asyncio.wait_for(Runner.run(agent, "Buy milk, urgent."), 300))
    note = result.final_output
    assert isinstance(note, Note) and 1 <= note.priority <= 3


def test_an_agent_with_tools_and_an_output_type_gets_a_parsed_object(agent_server: Server) -> None:
    """The SDK sends `tools` and `response_format` together: after its tool call, the agent's answer
    is held to the output type, not to a free string (it used to fail with "Invalid JSON")."""
    from agents import function_tool

    looked_up: list[str] = []

    @function_tool
    def look_up(topic: str) -> str:
        """Look a topic up."""
        looked_up.append(topic)
        return "found"

    # 'c' (token 5 + 0x63) favoured: once the tool has run, the random model opens {"content": ...}
    # (its answer) rather than {"tool_calls": ...} again. The constraint decides what may follow.
    settings = ModelSettings(tool_choice="required", temperature=1.0, max_tokens=300,
                             extra_body={"logit_bias": {"39": 4, "104": 4}, "seed": 5})
    agent = Agent(name=AGENT, instructions="Look the topic up, then write a note.", model=hal0_model(agent_server),
                  tools=[look_up], output_type=Note, model_settings=settings)
    result = asyncio.run(asyncio.wait_for(Runner.run(agent, "Buy milk, urgent.", max_turns=4), 300))
    note = result.final_output
    assert looked_up, f"the agent called its tool first: {result.new_items}"
    assert isinstance(note, Note) and 1 <= note.priority <= 3 and len(note.title) <= 20
