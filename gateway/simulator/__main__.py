"""``python -m gateway.simulator``: serve simulated OpenAI-compatible models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .models import DEFAULT_MODELS, SimConfigError, load_models
from .runner import run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.simulator",
        description=(
            "Serve simulated models over the OpenAI chat completions API. "
            "Prints 'switchyard-simulator listening on http://HOST:PORT/v1' when ready; "
            "stops cleanly on SIGTERM or Ctrl-C."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=9000,
        help="port to bind; 0 picks a free port and prints it (default: %(default)s)",
    )
    parser.add_argument(
        "--models",
        metavar="FILE",
        help="YAML file {models: [{name, ability, ttft_ms, ...}]} (default: sim-small, sim-medium, sim-large)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the server RNG for temperature > 0 (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        models = load_models(args.models) if args.models else list(DEFAULT_MODELS)
    except SimConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run(models, args.host, args.port, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
