"""hal0 parses each family's native tool-call output as llama-server does (issue 26, "Parsing").

The cases (native_parse_cases.py) are texts as each family's model writes them: one call, parallel calls,
text then a call, reasoning then a call, malformed output, plain text. What llama-server reports for
each is recorded in native_parse_expected.json by image/llama-chat-parse, a small program built from the
same llama.cpp source as hal0 that makes the server's calls (template init, apply with the tools, parse)
on a given text: llama-server itself cannot be made to generate a chosen text with tools (it refuses
`grammar` together with tools), so the reference parses the text the server would have generated.

- The recording must still be what the reference reports (rebuilt from the sdist, cached: a cold build
  of llama.cpp's common library takes minutes; tests/tools/install-test-deps.sh builds it beforehand).
- hal0's parse_reply must give the same content, reasoning and calls (arguments compared as JSON), and
  fail where llama-server fails the request.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hal0.inference import native_tools

from tests.integration.native_parse_cases import CASES, Case, expected, recorded_form, run_reference, template_form

ROOT = Path(__file__).resolve().parents[2]
RECORDED: dict[str, Any] = expected()


def _script(name: str, timeout: float) -> Path:
    done = subprocess.run([str(ROOT / "image" / name)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    if done.returncode != 0:
        pytest.fail(f"image/{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def templates() -> Path:
    return _script("llama-templates", 700)


@pytest.fixture(scope="module")
def chat_parse() -> Path:
    return _script("llama-chat-parse", 3700)


def test_every_case_is_recorded() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "two cases share an id"
    assert sorted(RECORDED.get("cases", {})) == sorted(ids), "re-record: python tests/tools/record_native_parse.py"


def test_the_reference_still_reports_the_recording(chat_parse: Path, templates: Path) -> None:
    reports = run_reference(chat_parse, templates, CASES)
    changed = {case.id: recorded_form(reports[case.id]) for case in CASES if recorded_form(reports[case.id]) != RECORDED["cases"][case.id]}
    assert not changed, f"llama.cpp now reports otherwise (re-record and review): {json.dumps(changed, indent=1, ensure_ascii=False)}"
    templates_now = {case.template: template_form(reports[case.id]) for case in CASES if "format" in reports[case.id]}
    assert templates_now == RECORDED["templates"], "llama.cpp now derives other triggers or markers (re-record and review)"


def _arguments(arguments: Any) -> Any:
    # Compared as JSON. Where llama.cpp's lenient parse passes on a call whose arguments are not JSON (a truncated
    # object: see the malformed cases), the recording holds the raw text and hal0 must give that same text.
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _calls(calls: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(call["name"], _arguments(call["arguments"])) for call in calls]


# Cases (an id, or a family for all its cases) where hal0 parses otherwise than llama-server, and why. The test
# fails when one of them stops differing, so the list stays true (as test_template_differential's DIFFERS).
_LOST = (
    "llama-server fails the request (its parser: 'does not match the expected format'); hal0 loses nothing and returns "
    "what the model wrote. hal0's own replies cannot hold this (the call grammar admits only the tools' names and their "
    "schemas), so it concerns only a reply the lazy constraint could not follow"
)
_GENERIC = "hal0 keeps its generic format for this template ({}): there is no native parse to compare"
DIFFERS: dict[str, str] = {
    # hal0's choice: nothing is lost
    "qwen2.5/malformed": _LOST, "qwen2.5/unknown_tool": _LOST, "qwen3/malformed": _LOST, "qwen3/unknown_tool": _LOST,
    "hermes-2-pro/malformed": _LOST, "hermes-2-pro/unknown_tool": _LOST, "hermes-3/malformed": _LOST, "hermes-3/unknown_tool": _LOST,
    "qwen3-coder/malformed": _LOST, "mistral-nemo/call_without_id": _LOST + " (a call without Mistral's 9-character id)",
    "llama-3.1/parallel_calls": _LOST + " (two calls where the template allows one: hal0 returns the first, the rest as text)",
    "llama-3.2/parallel_calls": _LOST + " (two calls where the template allows one: hal0 returns the first, the rest as text)",
    "llama-3.3/parallel_calls": _LOST + " (two calls where the template allows one: hal0 returns the first, the rest as text)",
    # whitespace: one rule for every family in hal0, per-family in llama.cpp
    "deepseek-r1-distill-qwen": "whitespace: for this template llama-server keeps the blank lines after </think> as content "
    "(even '\\n\\n' beside a call) and a leading newline in the reasoning; hal0 trims both, as llama-server itself does for Qwen3",
    # templates hal0 does not speak natively
    "deepseek-r1-distill-llama": _GENERIC.format("its template drops the call's name; llama.cpp knows R1's syntax from its own table"),
    "granite-3.3": _GENERIC.format("its template drops the call's name; llama.cpp knows Granite's syntax from its own table"),
    "functionary-v3.2": _GENERIC.format("a call is only `name\\n{args}` after `>>>`; llama-server itself mis-parses two calls"),
    "qwen3-coder": _GENERIC.format("arguments are XML <parameter=...> elements, not one JSON object"),
    "gpt-oss": _GENERIC.format("harmony channels; llama-server returns one of two calls"),
}


def _hal0_matches(case: Case, source: str) -> tuple[bool, str]:
    """Whether hal0's parse_reply gives what llama-server reports for the case, and what it gave."""
    want = RECORDED["cases"][case.id]
    not_native = native_tools.NotNative
    try:
        got = native_tools.parse_reply(source, case.tools, case.text)
    except not_native as error:
        # hal0 keeps the generic format for this template: no native parse to compare, even where llama-server fails
        return False, f"{type(error).__name__}: {error}"
    except ValueError as error:
        # llama-server fails the request ("The model produced output that does not match the expected ... format");
        # hal0 says so with a ValueError naming the problem (any message)
        return "error" in want and bool(str(error)), f"{type(error).__name__}: {error}"
    if "error" in want:
        return False, f"parsed {got}, llama-server fails the request: {want['error']}"
    same = (got["content"], got["reasoning_content"], _calls(got["tool_calls"])) == (
        want["content"], want["reasoning_content"], _calls(want["tool_calls"]))
    return same, f"hal0: {got}\nllama-server: {want}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hal0_parses_like_llama_server(case: Case, templates: Path) -> None:
    same, said = _hal0_matches(case, (templates / case.template).read_text(encoding="utf-8"))
    why = DIFFERS.get(case.id) or DIFFERS.get(case.family)
    if why:
        assert not same, f"{case.id} no longer differs from llama-server ({why}): take it out of DIFFERS"
    else:
        assert same, f"{case.id}: {case.text!r}\n{said}"
