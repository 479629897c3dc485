"""``lineguard-edge``: score a line's bundle on this machine.

    lineguard-edge predict BUNDLE FILE... [--heatmap-dir DIR]   image lines: one JSON line per file
    lineguard-edge predict BUNDLE --values 1.0,2.0,...          sensor lines: one JSON line per reading
    lineguard-edge serve BUNDLE... [--port 8000] [--history edge-history.sqlite]

Errors raised on purpose print ``error: ...`` and exit with the service's exit codes (2 configuration,
3 data, 4 mismatch, 5 not found, 6 a damaged bundle); a file that cannot be scored is its own JSON line
with ``error`` and ``status`` (the service's HTTP status), and the exit code is then 3.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from lineguard_edge.errors import DataError, LineGuardError, outcome
from lineguard_edge.history import LocalHistory
from lineguard_edge.model import EdgeModel, load
from lineguard_edge.server import EdgeService, Limits, make_server


def _values(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineguard-edge", description="Score LineGuard bundles without torch or Ray.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="score image files or readings; one JSON line each")
    predict.add_argument("bundle", type=Path)
    predict.add_argument("files", nargs="*", type=Path, help="image files (image lines)")
    predict.add_argument("--values", action="append", type=_values, default=[], help="one reading (sensor lines)")
    predict.add_argument("--sensor-id", default=None)
    predict.add_argument("--heatmap-dir", type=Path, default=None, help="write each image's heatmap PNG here")
    predict.add_argument("--threads", type=int, default=None, help="the runtime's threads (default: all cores)")
    serve = commands.add_parser("serve", help="the service's per-line HTTP routes over these bundles")
    serve.add_argument("bundles", nargs="+", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--history", default="edge-history.sqlite", help="SQLite file of the local history")
    serve.add_argument("--default-line", default=None, help="the image line of POST /predict")
    serve.add_argument("--default-sensor-line", default=None, help="the sensor line of POST /anomaly")
    serve.add_argument("--max-request-bytes", type=int, default=Limits.max_request_bytes)
    serve.add_argument("--threads", type=int, default=None)
    return parser


def run_predict(args: argparse.Namespace) -> int:
    model = load(args.bundle, args.threads)
    failed = False
    if model.takes_images:
        if not args.files or args.values:
            raise DataError(f"{args.bundle} is a {model.kind} bundle: give image files, not --values")
        for path in args.files:
            try:
                answer = model.predict(
                    path.read_bytes(), heatmap=args.heatmap_dir is not None, sensor_id=args.sensor_id
                )
            except (LineGuardError, OSError) as err:
                status = outcome(err).http if isinstance(err, LineGuardError) else 422
                print(json.dumps({"file": str(path), "error": str(err), "status": status}))
                failed = True
                continue
            png = answer.pop("heatmap_png", None)
            if png and args.heatmap_dir:
                args.heatmap_dir.mkdir(parents=True, exist_ok=True)
                (args.heatmap_dir / f"{path.stem}_heatmap.png").write_bytes(base64.b64decode(png))
            print(json.dumps({"file": str(path), **{k: v for k, v in answer.items() if v is not None}}))
    else:
        if not args.values or args.files:
            raise DataError(f"{args.bundle} is a sensor bundle: give readings with --values 1.0,2.0,...")
        for values in args.values:
            answer = model.predict_values(values, args.sensor_id)
            print(json.dumps({k: v for k, v in answer.items() if v is not None}))
    return 3 if failed else 0


def run_serve(args: argparse.Namespace) -> int:
    models: dict[str, EdgeModel] = {}
    for path in args.bundles:
        model = load(path, args.threads)
        if model.line in models:
            raise DataError(f"two bundles of line {model.line!r}: {models[model.line].bundle.folder} and {path}")
        models[model.line] = model
    service = EdgeService(
        models, LocalHistory(args.history), Limits(args.max_request_bytes), args.default_line, args.default_sensor_line
    )
    server = make_server(service, args.host, args.port)
    print(f"lineguard-edge: {', '.join(sorted(models))} on http://{args.host}:{server.server_port}", flush=True)
    # a service manager's stop (SIGTERM) ends the loop like Ctrl-C: answers in flight finish, the history closes
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.history.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run_predict(args) if args.command == "predict" else run_serve(args)
    except LineGuardError as err:
        print(f"error: {err}", file=sys.stderr)
        return outcome(err).exit


if __name__ == "__main__":
    sys.exit(main())
