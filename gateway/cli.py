"""`switchyard`: serve the gateway, run the demo, explain a routing decision, train the router.

Quick commands (route, policy check, --help) never import the web stack or litellm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

# The examples are printed as users will paste them, so their lines stay long.
EXAMPLES = """\
Switchyard is up on {base}  (simulated models: small and large, in-memory cache)

  curl {base}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "auto", "messages": [{{"role": "user", "content": "What is 17 + 25?"}}], "temperature": 0}}' -i

  python -c "from openai import OpenAI; c = OpenAI(base_url='{base}/v1', api_key='none'); \\
r = c.chat.completions.with_raw_response.create(model='auto', messages=[{{'role': 'user', 'content': 'Prove that sqrt(2) is irrational, step by step.'}}]); \\
print(r.headers['x-switchyard-plan'], r.headers['x-switchyard-cost-usd'], r.parse().choices[0].message.content[:80])"

  Explain a decision:  curl {base}/v1/route -H 'content-type: application/json' -d '{{"messages": [{{"role": "user", "content": "hi"}}]}}'
  Models:              curl {base}/v1/models
Press Ctrl-C to stop.
"""


def _setup_logging(level: str) -> None:
    from gateway.providers.litellm_backend import quiet_litellm_loggers

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_litellm_loggers()


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _uvicorn_config(app: Any, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          http="httptools", loop="none", lifespan="on", timeout_graceful_shutdown=10)


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.api.app import create_app
    from gateway.config import ENV_CONFIG, load_config

    path = args.config or os.environ.get(ENV_CONFIG)
    if not path:
        print("switchyard serve: give --config FILE (or set SWITCHYARD_CONFIG); "
              "for a try-out without one, run: switchyard demo", file=sys.stderr)
        return 2
    app = create_app(load_config(path))
    _run(uvicorn.Server(_uvicorn_config(app, args.host, args.port, args.log_level)).serve())
    return 0


async def _demo(args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.api.app import create_app
    from gateway.config import embedded_config
    from gateway.providers.simulated import DEFAULT_MODELS, start

    sim = await start(DEFAULT_MODELS, "127.0.0.1", args.sim_port)
    try:
        app = create_app(embedded_config(sim.url))
        server = uvicorn.Server(_uvicorn_config(app, args.host, args.port, args.log_level))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
            await asyncio.sleep(0.05)
        if server.started:
            print(EXAMPLES.format(base=f"http://{args.host}:{args.port}"), flush=True)
        await serving
    finally:
        await sim.close()


def cmd_demo(args: argparse.Namespace) -> int:
    if not _port_free(args.host, args.port):
        print(f"switchyard demo: {args.host}:{args.port} is in use; pick another with --port", file=sys.stderr)
        return 1
    _run(_demo(args))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from gateway.providers.simulated import DEFAULT_MODELS, load_models, run

    models = load_models(args.models) if args.models else DEFAULT_MODELS
    run(models, args.host, args.port, seed=args.seed)
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from gateway.router import load_router

    router = load_router(args.artifact)
    if args.batch:
        from gateway.router.batch import score_file

        if not args.out:
            print("switchyard route --batch needs --out FILE", file=sys.stderr)
            return 2
        n = score_file(args.batch, args.out, router, progress=not args.quiet)
        print(f"scored {n} prompts → {args.out}", file=sys.stderr)
        return 0
    if not args.prompt:
        print("switchyard route: give a prompt, or --batch IN.jsonl --out OUT.jsonl", file=sys.stderr)
        return 2
    from gateway.explain import explain_prompt, render

    explained = explain_prompt(" ".join(args.prompt), router, args.policy, args.config)
    print(json.dumps(explained, indent=2) if args.json else render(explained))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from gateway.router.train import train

    train(args.data, args.out, base=args.base, seed=args.seed, progress=not args.quiet)
    print(f"router written to {args.out}; point the gateway at it with `router_artifact: {args.out}`")
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from gateway.explain import check_policies

    problems = check_policies(Path(args.folder), args.config)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"{args.folder}: all policies valid, golden examples pass")
    return 1 if problems else 0


def cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    sys.path.insert(0, str(Path.cwd()))
    sys.argv = [f"benchmarks.{args.name}", *args.rest]
    runpy.run_module(f"benchmarks.{args.name}", run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchyard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gateway from a config file")
    s.add_argument("--config", help="gateway YAML (default: $SWITCHYARD_CONFIG)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="run the gateway on built-in simulated models (no keys, no Redis)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--sim-port", type=int, default=0, help="port of the simulated models (0: any free)")
    d.add_argument("--log-level", default="warning")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("simulate", help="run only the simulated OpenAI-compatible model server")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=9000)
    m.add_argument("--models", help="YAML with {models: [{name, ability, ttft_ms, ...}]}")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_simulate)

    r = sub.add_parser("route", help="explain where a prompt would go, or score a file of prompts")
    r.add_argument("prompt", nargs="*", help="the prompt to explain")
    r.add_argument("--policy", help="policy to decide under (default: the config's default)")
    r.add_argument("--config", help="gateway YAML whose deployments to use (default: the embedded default)")
    r.add_argument("--artifact", help="router directory made by `switchyard train` (default: the shipped one)")
    r.add_argument("--batch", metavar="IN.jsonl", help="score every prompt of a file in the routing-data schema")
    r.add_argument("--out", metavar="OUT.jsonl", help="with --batch: where to write the scores")
    r.add_argument("--json", action="store_true", help="print the explanation as JSON")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_route)

    t = sub.add_parser("train", help="train the router on your own routing data (same schema as the shipped data)")
    t.add_argument("--data", required=True, nargs="+", metavar="FILE",
                   help="JSONL: id, prompt, models{name: {score, cost_usd}}, split (several files: one router "
                        "over the union of their models)")
    t.add_argument("--base", help="adapt this router (`default` = the shipped one, or a directory) to the new "
                                  "labels instead of training from scratch; it keeps what it knew")
    t.add_argument("--out", required=True, help="directory for the trained router")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    pc = sub.add_parser("policy", help="policy tools").add_subparsers(dest="policy_command", required=True)
    c = pc.add_parser("check", help="validate policy files and run their golden examples (for CI)")
    c.add_argument("folder", nargs="?", default="routing_policies")
    c.add_argument("--config", help="gateway YAML to bind against (default: the embedded default)")
    c.set_defaults(func=cmd_policy_check)

    b = sub.add_parser("bench", help="run a benchmark from benchmarks/ (e.g. routing_quality, overhead)")
    b.add_argument("name")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    # The router's small matrix products run on the event loop; BLAS worker threads would only
    # spin on the other core. Set before anything imports numpy.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "log_level", "warning"))
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"switchyard: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
