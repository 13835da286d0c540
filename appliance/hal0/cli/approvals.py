"""`hal0 approvals list|show|approve|deny|explain`: the human channel from a terminal.

All but `explain` talk to a running server over its approval API (`--url`, default from the
config's port on loopback); `explain` reads the policy from the config file alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from hal0.agents.rules import CONFIG_CHECKS
from hal0.cli.client import CliError, Hal0Client, default_url
from hal0.config import ConfigError, load_config


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    with Hal0Client(args.url) as client:
        return client.send(method, path, **kwargs)


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def cmd_list(args: argparse.Namespace) -> int:
    params = {key: value for key, value in (("state", args.state), ("agent", args.agent)) if value}
    data = _request(args, "GET", "/api/approvals", params=params)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [
        [item["id"], item["state"], item["agent"], item["tool"], json.dumps(item["args"]), item["reason"], _when(item["created_at"])]
        for item in data["approvals"]
    ]
    print(_table(rows, ["ID", "STATE", "AGENT", "TOOL", "ARGS", "REASON", "CREATED"]) if rows else "no approvals")
    print(f"{data['pending']} pending")
    return 0


def _show(item: dict[str, Any]) -> None:
    fields = [("id", item["id"]), ("state", item["state"]), ("agent", item["agent"]), ("tool", item["tool"]),
              ("args", json.dumps(item["args"])), ("rule", item["rule"]), ("reason", item["reason"]),
              ("created", _when(item["created_at"])), ("expires", _when(item["expires_at"])),
              ("decided by", item.get("decided_by") or "-"), ("note", item.get("note") or "-")]
    if item.get("result") is not None:
        fields.append(("result", json.dumps(item["result"])))
    if item.get("error"):
        fields.append(("error", item["error"]))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {value}")
    for entry in reversed(item.get("audit", [])):
        print(f"  {_when(entry['at'])}  {entry['actor']}: {entry['action']} {entry['from_state'] or '-'} -> {entry['to_state']}"
              + (f" ({entry['detail']})" if entry.get("detail") else ""))


def cmd_show(args: argparse.Namespace) -> int:
    data = _request(args, "GET", f"/api/approvals/{args.id}")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _show(data)
    return 0


def _decide(args: argparse.Namespace, verb: str) -> int:
    body = {key: value for key, value in (("note", args.note), ("by", args.by)) if value}
    data = _request(args, "POST", f"/api/approvals/{args.id}/{verb}", json=body)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{data['id']}: {data['state']}" + (f" ({data['error']})" if data.get("error") else ""))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_deny(args: argparse.Namespace) -> int:
    return _decide(args, "deny")


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as error:
        raise CliError(f"--args must be a JSON object: {error}") from None
    if not isinstance(arguments, dict):
        raise CliError("--args must be a JSON object")
    if ":" not in args.tool:
        raise CliError(f"--tool must be server:tool, e.g. admin:unload_model, got {args.tool!r}")
    agents = load_config(args.config, checks=CONFIG_CHECKS).config.agents
    from hal0.tools import CATALOGUE

    spec = next((spec for spec in CATALOGUE if spec.qualified == args.tool), None)
    if spec is None:
        raise CliError(f"unknown tool {args.tool!r}; tools: {', '.join(sorted(s.qualified for s in CATALOGUE))}")
    from hal0.tools.policy import evaluate

    result = evaluate(agents, args.agent, spec, arguments).as_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['decision']}: {result['reason']}\n  by {result['rule']} (persona: {result['persona'] or 'none'})")
    return 0


def add_parser(commands: Any, config_default: str) -> None:
    approvals = commands.add_parser("approvals", help="list, show, approve, deny and explain approvals")
    sub = approvals.add_subparsers(dest="approvals_command", required=True, metavar="SUBCOMMAND")

    def remote(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("--url", help="hal0's base URL (default: loopback, port from the config)")
        parser.add_argument("--config", default=None, help=f"config file for the default URL (default: {config_default})")
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser

    listing = remote("list", "list approvals, pending first")
    listing.add_argument("--state", choices=["pending", "approved", "executing", "executed", "failed", "denied", "expired"])
    listing.add_argument("--agent")
    listing.set_defaults(run=cmd_list)
    show = remote("show", "one approval with its audit trail")
    show.add_argument("id")
    show.set_defaults(run=cmd_show)
    for name, run in (("approve", cmd_approve), ("deny", cmd_deny)):
        parser = remote(name, f"{name} a pending approval")
        parser.add_argument("id")
        parser.add_argument("--note", help="a note kept in the audit log")
        parser.add_argument("--by", help="who decides (default: operator)")
        parser.set_defaults(run=run)
    explain = sub.add_parser("explain", help="the decision the policy makes for a call, and the rule that makes it")
    explain.add_argument("--agent", required=True)
    explain.add_argument("--tool", required=True, help="server:tool, e.g. admin:unload_model")
    explain.add_argument("--args", default="{}", help="the call's arguments as a JSON object")
    explain.add_argument("--config", default=None)
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(run=cmd_explain)


def run(args: argparse.Namespace, config_path: str) -> int:
    if getattr(args, "config", None) is None:
        args.config = config_path
    if hasattr(args, "url") and not args.url:
        args.url = default_url(args.config)
    try:
        return args.run(args)
    except (CliError, ConfigError) as error:
        print(f"hal0 approvals: {error}", file=sys.stderr)
        return 1
