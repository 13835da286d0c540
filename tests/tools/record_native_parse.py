"""Record what llama-server reports for each native tool-call case (tests/integration/native_parse_cases.py).

Runs image/llama-chat-parse (built once, cached) on every case and writes
tests/integration/native_parse_expected.json: per case the format and the parse (content, reasoning_content,
tool_calls with arguments as JSON) or the error llama-server fails the request with, and per template the
format, generation prompt, lazy-grammar triggers, preserved tokens and thinking tags it derives with the tools.

usage: python tests/tools/record_native_parse.py [BINARY]   (default: what image/llama-chat-parse prints)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.native_parse_cases import CASES, EXPECTED_PATH, recorded_form, run_reference, template_form  # noqa: E402


def _script(name: str, timeout: float) -> Path:
    done = subprocess.run([str(ROOT / "image" / name)], capture_output=True, text=True, timeout=timeout, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def main() -> None:
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else _script("llama-chat-parse", 3700)
    templates = _script("llama-templates", 700)
    reports = run_reference(binary, templates, CASES)
    recorded = {
        "reference": subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True, timeout=60).stdout.strip(),
        "templates": {case.template: template_form(reports[case.id]) for case in CASES if "format" in reports[case.id]},
        "cases": {case.id: recorded_form(reports[case.id]) for case in CASES},
    }
    EXPECTED_PATH.write_text(json.dumps(recorded, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    print(f"{len(CASES)} cases recorded in {EXPECTED_PATH.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
