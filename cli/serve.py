"""``lineguard serve``: the HTTP service from ``serve_config.yaml`` (through :mod:`lineguard.cli.launcher`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lineguard.cli import launcher
from lineguard.cli.settings import get_settings


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the HTTP service from serve_config.yaml until Ctrl-C")
    serve.add_argument("--config", type=Path, default=None, help=launcher.CONFIG_HELP)
    serve.add_argument("--host", default=None, help="override http_options.host (e.g. 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--default-line", default=None, help="line answered by the plain POST /predict")
    serve.add_argument(
        "--history-url",
        default=None,
        help="override history.url: postgresql+psycopg://user:pw@host/db, or env:NAME to read it from that variable",
    )
    serve.add_argument("--no-haproxy", action="store_true", help="use Serve's Python proxy instead of HAProxy")
    serve.add_argument(
        "--samples",
        action="append",
        default=None,
        metavar="FOLDER",
        help="a folder of MVTec-layout test sets the web page's simulator may read (web.sample_roots; repeatable)",
    )
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = args.store or get_settings().store
    host, port = args.host or "127.0.0.1", args.port or 8000
    config_file = launcher.config_path(args.config)
    overrides = (store, args.host, args.port, args.default_line, args.samples, args.history_url)
    with launcher.prepared_config(config_file, *overrides) as config:
        print(f"serving the lines of {store} with {config_file} (ready check: http://{host}:{port}/healthz)")
        print(f"operators' web page: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
        env = launcher.serve_environment(haproxy=not args.no_haproxy)
        ready = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/healthz"
        return launcher.run_foreground(config, env, ready)
