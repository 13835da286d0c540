"""`hal0 memory export|import`: move an agent's memory namespace between boxes, as JSON Lines.

Behind a fleet's proxy an agent's memory lives on the box its X-hal0-Agent hashes to. When that box
fails, the agent moves to a neighbour and starts with an empty namespace there; when the box is gone
for good, the operator exports the namespace (from the box, or from a backup of it) and imports it
where the agent lives now (through the proxy: the agent header routes the import to the right box).

    hal0 memory export --agent alice --url http://127.0.0.1:8080 > alice.jsonl
    hal0 memory import --agent alice --url https://proxy.lan --user hal0:PASSWORD < alice.jsonl

Both talk to the REST API (/api/memory) with the agent's header. One JSON object per line:
{"text", "tags", "metadata", "id", "created", "updated"}; an import stores text, tags and metadata
(the items get new ids and timestamps on the new box).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from hal0.agents import AGENT_HEADER
from hal0.cli.client import CliError, Hal0Client, default_url
from hal0.config import ConfigError

PAGE = 100


def _client(args: argparse.Namespace) -> Hal0Client:
    return Hal0Client(args.url, user=args.user, cacert=args.cacert, insecure=args.insecure, headers={AGENT_HEADER: args.agent})


def export_items(client: Hal0Client) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
        page = client.send("GET", "/api/memory", params=params)
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


@contextlib.contextmanager
def _file_or(std: IO[str], path: str | None, mode: str) -> Iterator[IO[str]]:
    """The named file, or `std` for none or "-" (left open: it is not ours to close)."""
    if path in (None, "-"):
        yield std
    else:
        with open(path, mode, encoding="utf-8") as handle:
            yield handle


def cmd_export(args: argparse.Namespace) -> int:
    count = 0
    with _file_or(sys.stdout, args.output, "w") as out, _client(args) as client:
        for item in export_items(client):
            record = {key: item.get(key) for key in ("text", "tags", "metadata", "id", "created", "updated")}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    print(f"exported {count} item{'s' if count != 1 else ''} of agent {args.agent}", file=sys.stderr)
    return 0


def _records(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CliError(f"line {number}: not JSON: {error}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CliError(f"line {number}: expected an object with a text field")
        yield number, record


def cmd_import(args: argparse.Namespace) -> int:
    count = 0
    with _file_or(sys.stdin, args.input, "r") as source:
        records = list(_records(source))  # the whole file is checked before anything is imported
    with _client(args) as client:
        for number, record in records:
            body = {"text": record["text"], "tags": record.get("tags") or None, "metadata": record.get("metadata")}
            try:
                client.send("POST", "/api/memory", json=body)
            except CliError as error:
                raise CliError(f"line {number} (after {count} imported): {error}") from None
            count += 1
    print(f"imported {count} item{'s' if count != 1 else ''} into agent {args.agent}", file=sys.stderr)
    return 0


def add_parser(commands: Any, config_default: str) -> None:
    memory = commands.add_parser("memory", help="export and import an agent's memory namespace (JSON Lines)")
    sub = memory.add_subparsers(dest="memory_command", required=True, metavar="SUBCOMMAND")
    for name, run, help_text in (
        ("export", cmd_export, "write an agent's memory items as JSON Lines"),
        ("import", cmd_import, "add JSON Lines items to an agent's memory"),
    ):
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("--agent", required=True, help="the namespace (sent as X-hal0-Agent)")
        parser.add_argument("--url", help="hal0's (or the proxy's) base URL (default: loopback, port from the config)")
        parser.add_argument("--config", default=None, help=f"config file for the default URL (default: {config_default})")
        parser.add_argument("--user", help="basic auth NAME[:PASSWORD] for a proxy (or $HAL0_USER; $HAL0_PASSWORD)")
        parser.add_argument("--cacert", help="CA bundle to trust for an https URL (e.g. the proxy's self-signed cert)")
        parser.add_argument("--insecure", action="store_true", help="do not verify the https certificate")
        if name == "export":
            parser.add_argument("--output", "-o", help="file to write (default: stdout)")
        else:
            parser.add_argument("--input", "-i", help="file to read (default: stdin)")
        parser.set_defaults(run=run)


def run(args: argparse.Namespace, config_path: str) -> int:
    if args.config is None:
        args.config = config_path
    if not args.url:
        args.url = default_url(args.config)
    try:
        return int(args.run(args))
    except (CliError, ConfigError, OSError) as error:
        print(f"hal0 memory: {error}", file=sys.stderr)
        return 1
