"""`switchyard`: serve the gateway, run the demo, explain a routing decision, train the router.

Quick commands (route, policy check, --help) never import the web stack or litellm.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import keys_cli
from gateway.errors import ConfigError, InputError

if TYPE_CHECKING:
    from gateway.ledger import Window

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

# The levels both logging and uvicorn know, in either case (INFO or info).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _setup_logging(level: str, fmt: str | None = None) -> None:
    """`fmt`: json or text; None: text at a terminal, JSON otherwise (`gateway.logs`)."""
    from gateway.logs import LOG_FLUSH_S, configure, quiet_litellm_loggers

    configure(level, "json" if fmt == "json" else "text" if fmt == "text" else None, flush_s=LOG_FLUSH_S)
    quiet_litellm_loggers()


def _host_port(host: str, port: int) -> str:
    """host:port as a URL writes it: an IPv6 address in brackets ([::1]:8080)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port, or None if it can: bound as asyncio's server
    will bind it, on every address the host resolves to (an IPv6 one on an IPv6 socket)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"unknown host {host!r} ({exc.strerror}); give an address or a name this machine resolves"
    opened = 0
    for family, kind, proto, _, address in addresses:
        try:
            s = socket.socket(family, kind, proto)
        except OSError:  # a family this kernel lacks (IPv6 switched off): asyncio's server skips it too
            continue
        opened += 1
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio does: "::" then leaves IPv4 to its own socket
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(address)
            except OSError as exc:
                return _bind_error(host, port, exc)
    if not opened:  # the server would listen on nothing and still say it is running
        return f"cannot listen on {host}: this machine has no socket for its address family; pick one with --host"
    return None


def _bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{_host_port(host, port)} is in use; pick another with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: it is not an address of this machine; pick one with --host"
    return f"cannot listen on {_host_port(host, port)}: {exc.strerror}"


def _uvicorn_config(app: Any, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    # log_config=None: uvicorn's own lines go through the root handler, in the chosen format
    from gateway.api.http_limits import BoundedHttpToolsProtocol

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, log_config=None,
                          http=BoundedHttpToolsProtocol, loop="none", lifespan="on", timeout_graceful_shutdown=10)


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


# Past this many worker processes per core they only contend for it (each is CPU-bound on its own).
WORKERS_PER_CPU = 4


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.api.app import create_app
    from gateway.config import ENV_CONFIG, load_config

    path = args.config or os.environ.get(ENV_CONFIG)
    if not path:
        print("switchyard serve: give --config FILE (or set SWITCHYARD_CONFIG); "
              "for a try-out without one, run: switchyard demo", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"switchyard serve: --workers must be 1 or more, got {args.workers}", file=sys.stderr)
        return 2
    most = WORKERS_PER_CPU * (os.cpu_count() or 1)
    if args.workers > most:
        # Each worker is a whole gateway (~200 MB with its router): a typo such as 1000 for 10 started all of
        # them until the kernel's OOM killer stopped the host's other processes.
        print(f"switchyard serve: --workers {args.workers} is more than {WORKERS_PER_CPU} per CPU core (this host "
              f"has {os.cpu_count() or 1}: at most {most}); each worker is a whole gateway process of ~200 MB",
              file=sys.stderr)
        return 2
    # Before the config, the router and the store: a taken port or a wrong host would otherwise fail
    # only after all of them, in uvicorn's words. (Port 0 asks for any free one.)
    problem = _cannot_listen(args.host, args.port)
    if problem:
        print(f"switchyard serve: {problem}", file=sys.stderr)
        return 1
    if args.workers > 1:
        from gateway.workers import serve

        return serve(path, args.host, args.port, args.workers, args.log_level, args.log_format)
    app = create_app(load_config(path))
    _run(uvicorn.Server(_uvicorn_config(app, args.host, args.port, args.log_level)).serve())
    return 0


async def _demo(args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.api.app import create_app
    from gateway.config import embedded_config
    from gateway.simulator import DEFAULT_MODELS, start

    sim = await start(DEFAULT_MODELS, "127.0.0.1", args.sim_port)
    try:
        app = create_app(embedded_config(sim.url))
        server = uvicorn.Server(_uvicorn_config(app, args.host, args.port, args.log_level))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
            await asyncio.sleep(0.05)
        if server.started:
            print(EXAMPLES.format(base=f"http://{_host_port(args.host, args.port)}"), flush=True)
        await serving
    finally:
        await sim.close()


def cmd_demo(args: argparse.Namespace) -> int:
    problem = _cannot_listen(args.host, args.port)
    if problem:
        print(f"switchyard demo: {problem}", file=sys.stderr)
        return 1
    _run(_demo(args))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from gateway.simulator import DEFAULT_MODELS, load_models, run

    models = load_models(args.models) if args.models else DEFAULT_MODELS
    run(models, args.host, args.port, seed=args.seed)
    return 0


def same_file(a: str | Path, b: str | Path) -> bool:
    """Do two paths name one file (an output opened for writing would empty the input it was to read)?"""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet: then not the same, unless they are one path
        return Path(a).resolve() == Path(b).resolve()


def cmd_route(args: argparse.Namespace) -> int:
    from gateway.router.admin import serving_router
    from gateway.state import StoreUnavailable

    # One or the other: `route "prompt" --out FILE` printed the explanation and wrote no file, and a prompt
    # beside --batch was dropped, both with exit 0.
    if args.out and not args.batch:
        print("switchyard route: --out is for --batch IN.jsonl; a prompt's explanation is printed (--json for "
              "machines)", file=sys.stderr)
        return 2
    if args.batch and args.prompt:
        print("switchyard route: give a prompt or --batch IN.jsonl, not both", file=sys.stderr)
        return 2

    # The router a gateway started with this config serves (the promoted one, else its router_artifact, else the
    # shipped one), as `router evaluate` compares with: the config's router_artifact alone explained with another
    # router than the gateway's once one was promoted. Checked whole, as serve and promote check it.
    try:
        served = serving_router(_route_config(args.config), args.artifact)
    except StoreUnavailable as exc:
        print(f"switchyard route: cannot read the promoted router ({exc}); name one with --artifact DIR",
              file=sys.stderr)
        return 1
    router = served.router
    if args.batch:
        from gateway.router.batch import score_file

        if not args.out:
            print("switchyard route --batch needs --out FILE", file=sys.stderr)
            return 2
        if same_file(args.batch, args.out):
            print(f"switchyard route: --out {args.out} is the input file; writing it would empty it first",
                  file=sys.stderr)
            return 2
        n = score_file(args.batch, args.out, router, progress=not args.quiet)
        print(f"scored {n} prompts → {args.out}", file=sys.stderr)
        return 0
    if not args.prompt:
        print("switchyard route: give a prompt, or --batch IN.jsonl --out OUT.jsonl", file=sys.stderr)
        return 2
    from gateway.explain import explain_prompt, render

    explained = explain_prompt(" ".join(args.prompt), router, args.policy, args.config, served.version)
    print(json.dumps(explained, indent=2) if args.json else render(explained))
    return 0


def _route_config(config_path: str | None) -> Any:
    """The gateway config `route` explains under (None: the embedded default)."""
    if not config_path:
        return None
    from gateway.config import load_config

    return load_config(config_path)


def cmd_train(args: argparse.Namespace) -> int:
    if not args.out:  # `--out "$DIR"` with DIR unset: the router would land in the working directory
        print("switchyard train: --out is empty: name the directory to write the router to", file=sys.stderr)
        return 2
    if Path(args.out).exists() and not Path(args.out).is_dir():  # else found only once the fit is done
        print(f"switchyard train: --out {args.out} is a file; name a directory to write the router to",
              file=sys.stderr)
        return 2
    try:
        from gateway.router.training.train import train
    except ModuleNotFoundError as exc:  # scipy is the `train` extra: serving never needs it
        if (exc.name or "").partition(".")[0] != "scipy":
            raise
        print("switchyard train: training needs scipy, which the plain install leaves out: "
              "pip install 'switchyard[train]' (in a checkout: pip install -e '.[train]')", file=sys.stderr)
        return 1
    train(args.data, args.out, base=args.base, seed=args.seed, progress=not args.quiet)
    print(f"router written to {args.out}; point the gateway at it with `router_artifact: {args.out}`")
    return 0


def cmd_router(args: argparse.Namespace) -> int:
    from gateway.router import admin

    if args.router_command == "promote":
        return admin.promote(args.directory, args.config, args.by)
    if args.router_command == "rollback":
        return admin.rollback(args.version, args.config, args.by)
    if args.router_command == "history":
        return admin.history(args.config, args.json)
    from gateway.router.training.compare import Targets

    targets = Targets(args.share, args.quality, args.threshold)
    return admin.evaluate(args.candidate, args.data, split=args.split, weak=args.weak, strong=args.strong,
                          targets=targets, policy=args.policy, config_path=args.config, against=args.against,
                          as_json=args.json, progress=not args.quiet)


LOGS_EXPORT_HELP = """\
Write the logged requests that have feedback (POST /v1/feedback, shadow labels) as routing data
(the schema `switchyard train --data` reads): one line per request, the answering deployment's
router_profile (else its name) scored by the request's feedback.

Reads the gateway's store (redis_url in --config) or, for a gateway on the in-memory store, the
JSONL file its request_log.path names (or --from-jsonl FILE). Only tenants with `log_prompts: true`
keep prompt text: requests of other tenants are skipped and counted.

Which labels count (--origin, comma-separated):
  gateway         the gateway's own shadow labels (default). No client can write them, so no tenant
                  can steer a router trained on the export for every tenant.
  client          labels posted to POST /v1/feedback by any tenant: whatever a tenant says, `source`
                  included (a posted "judge" is a client label, never the gateway's)
  client:TENANT   labels posted by that tenant only (e.g. a team whose evaluations you trust)
Among the labels taken, a request is scored by a client's eval, else a client's user label, else the
gateway's judge, else a client's "judge". --tenant A,B exports only those tenants' requests.

  switchyard logs export --out traffic.jsonl --config gw.yaml --since 7d
  switchyard logs export --out traffic.jsonl --config gw.yaml --origin gateway,client:evals
"""


def cmd_logs_export(args: argparse.Namespace) -> int:

    from gateway.config import ENV_CONFIG, load_config
    from gateway.logs_export import Trusted, model_names, parse_duration

    try:
        since_s = time.time() - parse_duration(args.since) if args.since else 0.0
    except ValueError as exc:
        print(f"switchyard logs export: --since: {exc}", file=sys.stderr)
        return 2
    try:
        trusted = Trusted.parse(args.origin, args.tenant)
    except ValueError as exc:
        print(f"switchyard logs export: --origin/--tenant: {exc}", file=sys.stderr)
        return 2
    path = args.config or os.environ.get(ENV_CONFIG)
    config = load_config(path) if path else None
    names = model_names(config.deployments) if config else {}
    jsonl = args.from_jsonl or (config.request_log.path if config and not config.redis_url else None)
    if jsonl is None and (config is None or not config.redis_url):
        print("switchyard logs export: nothing to read: give --config with a redis_url or a request_log.path, "
              "or --from-jsonl FILE", file=sys.stderr)
        return 2
    out = Path(args.out)
    if jsonl is not None and same_file(jsonl, out):
        print(f"switchyard logs export: --out {out} is the request log it reads; writing it would empty it first",
              file=sys.stderr)
        return 2
    # Read from the store or not, the gateway keeps appending to its JSONL log: the export would empty it.
    if config is not None and config.request_log.path and same_file(config.request_log.path, out):
        print(f"switchyard logs export: --out {out} is the request log the gateway writes (request_log.path); "
              "writing it would empty it", file=sys.stderr)
        return 2
    if jsonl is not None:
        from gateway.logs_export import from_jsonl, write_rows

        counts = write_rows(from_jsonl(Path(jsonl), since_s), names, out, trusted)
    else:
        assert config is not None and config.redis_url
        from gateway.state import StoreUnavailable

        try:
            counts = asyncio.run(_export_from_redis(config.redis_url, since_s, names, out, trusted))
        except StoreUnavailable as exc:
            print(f"switchyard logs export: the store did not answer: {exc}", file=sys.stderr)
            return 1
    print(f"exported {counts.exported} requests with feedback to {out}; skipped {counts.without_prompt} without "
          f"prompt text (their tenant has no log_prompts: true), {counts.without_feedback} without feedback and "
          f"{counts.untrusted} labelled by no origin taken (--origin {args.origin})")
    if counts.untrusted and "client" not in args.origin:
        print("  clients' own labels (POST /v1/feedback) are left out by default: --origin gateway,client takes "
              "every tenant's, --origin gateway,client:NAME one tenant's")
    if config is None and counts.exported:
        # Without the config the rows name each model by its deployment: a router trained on them learns
        # "small", which scores nothing the gateway serves under its router_profile.
        print("  no --config: each model is named by its deployment, not by its router_profile; give --config "
              "with the gateway's YAML to name them as the router knows them")
    return 0


async def _export_from_redis(url: str, since_s: float, names: dict[str, str], out: Path, trusted: Any) -> Any:
    from gateway.logs_export import from_store, write_rows
    from gateway.state import RedisStore

    store = RedisStore(url, timeout_s=5.0)
    try:
        pairs = [pair async for pair in from_store(store, int(since_s * 1000))]
    finally:
        await store.close()
    return write_rows(iter(pairs), names, out, trusted)


SPEND_HELP = """\
Print the durable spend ledger: requests, cost, tokens, and the savings against always taking
each policy's dearest candidate (counterfactual_usd, savings_usd), with the router's predicted
quality of what was chosen (q_chosen; predicted_quality_chosen in --csv, as the API names it) and of
that candidate (q_counterfactual; predicted_quality_counterfactual). The same rows as
GET /v1/spend with the admin key, read straight from the Redis in the gateway config (--config
or $SWITCHYARD_CONFIG). A gateway on the in-memory store keeps its ledger in its own process:
ask its /v1/spend instead.

  switchyard spend --config gw.yaml --group-by deployment,policy --since 7d
  switchyard spend --config gw.yaml --group-by tenant,hour --csv > spend.csv
"""


def _since_window(since: str | None) -> Window:
    """The ledger window of `--since` (default: the ledger's), ending now: one clock reading for both
    ends, else --since 400d, the longest the ledger keeps, came out a moment longer."""
    from gateway import ledger
    from gateway.logs_export import parse_duration

    now = time.time()
    if since is None:
        return ledger.window(None, None, now)
    seconds = parse_duration(since)
    if seconds <= 0:  # an empty window, which GET /v1/spend refuses too
        raise ValueError(f"--since must be longer than 0, got {since!r}")
    return ledger.window(now - seconds, None, now)


def cmd_spend(args: argparse.Namespace) -> int:
    from gateway import ledger
    from gateway.config import ENV_CONFIG, load_config
    from gateway.spend_report import as_csv, as_text, spend_rows
    from gateway.state import StoreUnavailable

    path = args.config or os.environ.get(ENV_CONFIG)
    config = load_config(path) if path else None
    if config is None or not config.redis_url:
        print("switchyard spend: the ledger lives in Redis: give --config with a redis_url (a gateway on the "
              "in-memory store keeps it in its own process: ask its GET /v1/spend)", file=sys.stderr)
        return 2
    try:
        group_by = ledger.parse_group_by(args.group_by)
        window = _since_window(args.since)
    except ValueError as exc:
        print(f"switchyard spend: {exc}", file=sys.stderr)
        return 2
    try:
        rows = asyncio.run(spend_rows(config.redis_url, window, group_by))
    except StoreUnavailable as exc:
        print(f"switchyard spend: the store did not answer: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(as_csv(rows, group_by) if args.csv else as_text(rows, group_by))
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from gateway.explain import check_policies

    folder = args.folder or os.environ.get("SWITCHYARD_POLICIES_DIR") or "routing_policies"
    problems = check_policies(Path(folder), args.config)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"{folder}: all policies valid, golden examples pass")
    return 1 if problems else 0


def cmd_policy_history(args: argparse.Namespace) -> int:
    from gateway.policy import admin

    return admin.history(args.name, args.config, args.json)


def cmd_policy_rollback(args: argparse.Namespace) -> int:
    from gateway.policy import admin

    return admin.rollback(args.name, args.version, args.config, args.by)


def cmd_policy_calibrate(args: argparse.Namespace) -> int:
    from gateway.explain import calibrate, render_calibration

    try:
        result = calibrate(args.name, Path(args.traffic), args.config, progress=not args.quiet)
    except ConfigError as exc:
        print(f"switchyard policy calibrate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        from gateway.policy.decide import json_number

        # A target of no strong requests sets the threshold at inf, which JSON has no number for: printed
        # as /v1/route and `route --json` print a threshold, "inf" (json.dumps wrote Infinity, not JSON).
        print(json.dumps({**result, "threshold": json_number(result["threshold"])}, indent=2))
    else:
        print(render_calibration(result))
    return 0


BENCH_HELP = """\
Run a benchmark of ./benchmarks (from the repository root); it writes its report to
benchmarks/results/ and says on stderr what it is doing, a line per phase. `switchyard bench NAME
--help` shows its own options.

Where the data comes from:
  routing_quality    the five routing-data files (mmlu_pro, arena_chat, cruxeval_code, llmrouter_mixed,
                     theoremqa_stem .jsonl) in ../shared/data beside the repository (--data-dir DIR);
                     fits sixteen routers: about an hour
  test_time_compute  ../shared/data/mmlu_pro.jsonl and its mmlu_pro_prices.json (--data FILE)
  target_tracking    the five routing-data files, as routing_quality (--data-dir DIR): strong-share
                     targets on replayed traffic; seconds
  overhead, rate_limits, fault_soak, fuzz
                     no data: they start the simulated models, Redis and the gateway themselves
A routing benchmark whose data is not there stops at once, in one line naming the folder or file.

  switchyard bench routing_quality --data-dir /data/routing --work /tmp/fits --reuse
  switchyard bench fault_soak --requests 2000
"""


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib.util
    import runpy

    sys.path.insert(0, str(Path.cwd()))
    try:
        found = args.name.isidentifier() and importlib.util.find_spec(f"benchmarks.{args.name}") is not None
    except ModuleNotFoundError:  # no benchmarks package here at all
        found = False
    if not found:
        known = sorted(p.stem for p in (Path.cwd() / "benchmarks").glob("*")
                       if (p / "__main__.py").is_file() or (p.suffix == ".py" and p.stem != "__init__"))
        print(f"switchyard bench: no benchmark '{args.name}' in {Path.cwd() / 'benchmarks'} "
              f"({', '.join(known) or 'none: run it from the repository root'})", file=sys.stderr)
        return 2
    sys.argv = [f"benchmarks.{args.name}", *args.rest]
    runpy.run_module(f"benchmarks.{args.name}", run_name="__main__")
    return 0


# `router evaluate --split`: the routing data's own splits (`hash_split`), or every row
# (`admin.split_rows`). Here rather than there: building the parser imports no numpy.
SPLITS = ("validation", "train", "all")


def _port(raw: str) -> int:
    """A TCP port; out-of-range numbers would otherwise wrap (99999 binds 34463) or end in a traceback."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def _number(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False) -> Any:
    """An argparse type: a finite number in [low, high] (or (low, high])."""
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {raw!r}")
        if not (low < value if low_open else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"must be {'over' if low_open else 'from'} {low:g} "
                                             f"{'up ' if low_open else ''}to {high:g}, got {raw!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchyard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gateway from a config file")
    s.add_argument("--config", help="gateway YAML (default: $SWITCHYARD_CONFIG)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for all)")
    s.add_argument("--port", type=_port, default=8080, help="port to listen on (default: %(default)s)")
    s.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS,
                   help="debug, info, warning, error or critical (default: %(default)s)")
    s.add_argument("--workers", type=int, default=1,
                   help="worker processes on this host, sharing the port, each with its own app (default 1); "
                        "they share budgets, rate limits and the cache only through redis_url")
    s.add_argument("--log-format", choices=("json", "text"),
                   help="json: one JSON object per line (a line per request at info); text: for people "
                        "(default: text at a terminal, json otherwise)")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="run the gateway on built-in simulated models (no keys, no Redis)")
    d.add_argument("--host", default="127.0.0.1", help="address the gateway listens on (default: %(default)s)")
    d.add_argument("--port", type=_port, default=8080, help="port the gateway listens on (default: %(default)s)")
    d.add_argument("--sim-port", type=_port, default=0, help="port of the simulated models (0: any free)")
    d.add_argument("--log-level", default="warning", type=str.lower, choices=LOG_LEVELS,
                   help="debug, info, warning, error or critical (default: %(default)s)")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("simulate", help="run only the simulated OpenAI-compatible model server")
    m.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    m.add_argument("--port", type=_port, default=9000, help="port to listen on (default: %(default)s)")
    m.add_argument("--models", help="YAML with {models: [{name, ability, ttft_ms, ...}]} "
                                    "(default: sim-small, sim-medium, sim-large)")
    m.add_argument("--seed", type=int, default=0, help="seed of the simulated answers at temperature > 0 "
                                                       "(default: %(default)s)")
    m.set_defaults(func=cmd_simulate)

    r = sub.add_parser("route", help="explain where a prompt would go, or score a file of prompts")
    r.add_argument("prompt", nargs="*", help="the prompt to explain")
    r.add_argument("--policy", help="policy to decide under (default: the config's default)")
    r.add_argument("--config", help="gateway YAML whose deployments and router to use (default: the embedded "
                                    "default)")
    r.add_argument("--artifact", help="router directory made by `switchyard train` (default: the router the "
                                      "--config's gateway serves: the promoted one, else its router_artifact, "
                                      "else the shipped one)")
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
    t.add_argument("--seed", type=int, default=0, help="seed of the fit's random draws (default: %(default)s)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    rt = sub.add_parser("router", help="router versions: evaluate a candidate, promote it to every replica, roll back")
    rs = rt.add_subparsers(dest="router_command", required=True)
    config_help = "gateway YAML whose redis_url holds the versions (default: $SWITCHYARD_CONFIG, else $SWITCHYARD_REDIS_URL)"
    ev = rs.add_parser("evaluate", help="compare a candidate router with the serving one on labelled data")
    ev.add_argument("candidate", help="router directory made by `switchyard train`")
    ev.add_argument("--data", required=True, help="JSONL in the routing-data schema")
    ev.add_argument("--split", default="validation", choices=SPLITS,
                    help="rows to score: validation (default), train or all")
    ev.add_argument("--weak", help="the weak model of the pair (default: the file's usual pairs)")
    ev.add_argument("--strong", help="the strong model of the pair")
    ev.add_argument("--policy", help="take the share/quality target from this policy's `target`")
    ev.add_argument("--share", type=_number(0, 1), default=0.3, help="share of prompts to the strong model to measure at")
    ev.add_argument("--quality", type=_number(0, 1, low_open=True), default=0.95, help="quality target, as a share of always-strong")
    ev.add_argument("--threshold", type=_number(), help="also measure at this threshold on the router's score")
    ev.add_argument("--against", help="compare with this router directory instead of the serving one")
    ev.add_argument("--config", help=config_help)
    ev.add_argument("--json", action="store_true", help="print the comparison as JSON")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    pr = rs.add_parser("promote", help="validate a router directory and make every replica serve it")
    pr.add_argument("directory", help="router directory made by `switchyard train`")
    rb = rs.add_parser("rollback", help="serve the router before the last change again (or VERSION)")
    rb.add_argument("version", nargs="?", help="a version (name@hash), a name, a hash prefix of 6+, or `configured`")
    hi = rs.add_parser("history", help="list promotions and rollbacks, and what is served now")
    hi.add_argument("--json", action="store_true", help="print the history as JSON")
    for cmd in (pr, rb, hi):
        cmd.add_argument("--config", help=config_help)
    for cmd in (pr, rb):
        cmd.add_argument("--by", help="who is making the change (default: user@host)")
    rt.set_defaults(func=cmd_router)

    pc = sub.add_parser("policy", help="policy tools").add_subparsers(dest="policy_command", required=True)
    c = pc.add_parser("check", help="validate policy files and run their golden examples (for CI)")
    c.add_argument("folder", nargs="?",
                   help="folder of policy YAML files, or one such file (default: $SWITCHYARD_POLICIES_DIR, as the "
                        "gateway reads it, else routing_policies)")
    c.add_argument("--config", help="gateway YAML to bind against (default: the embedded default)")
    c.set_defaults(func=cmd_policy_check)
    k = pc.add_parser(
        "calibrate", help="what a target policy would do on a file of traffic, before deploying it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score every prompt of a traffic file with the router, then print the threshold the policy's\n"
                    "target would set on that traffic, and the expected share of requests sent to the strong\n"
                    "choice, the predicted quality and the cost per 1,000 requests (next to always-cheap and\n"
                    "always-strong). The gateway itself recalibrates continuously on its live traffic.")
    k.add_argument("name", help="policy name (the user's routing_policies/NAME.yaml, else the shipped one)")
    k.add_argument("--traffic", required=True, metavar="FILE.jsonl",
                   help="one request a line: the routing-data schema ('prompt') or OpenAI 'messages'; at least 50")
    k.add_argument("--config", help="gateway YAML whose deployments and prices to use (default: the embedded default)")
    k.add_argument("--json", action="store_true", help="print the result as JSON")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=cmd_policy_calibrate)
    ph = pc.add_parser("history", help="every version of a policy that came into force, with a diff of each change",
                       description="Versions oldest first: when, how (start-up, file reload, cli rollback), by whom,\n"
                                   "from which file, and a unified diff of the spec (as YAML) against the version\n"
                                   "before it. Read from the shared store (redis_url of --config).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ph.add_argument("name", help="policy name")
    ph.add_argument("--config", help="gateway YAML with the redis_url (default: $SWITCHYARD_CONFIG)")
    ph.add_argument("--json", action="store_true", help="the entries as JSON, with their specs")
    ph.set_defaults(func=cmd_policy_history)
    pr2 = pc.add_parser("rollback", help="put an earlier version of a policy back in force on every replica",
                        description="Writes the version's spec back as NAME.yaml in the config's policy folder\n"
                                    "and records the rollback in the shared store; replicas that share the folder\n"
                                    "reload the file, the others follow the store, within about 2 s.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr2.add_argument("name", help="policy name")
    pr2.add_argument("version", help="a version from `policy history` (12 hex digits, or a prefix of 4+)")
    pr2.add_argument("--config", help="gateway YAML with the redis_url and policies_dir (default: $SWITCHYARD_CONFIG)")
    pr2.add_argument("--by", help="who is making the change (default: user@host)")
    pr2.set_defaults(func=cmd_policy_rollback)

    lg = sub.add_parser("logs", help="request logs").add_subparsers(dest="logs_command", required=True)
    e = lg.add_parser("export", help="logged requests with feedback → routing data (JSONL) for `train`",
                      description=LOGS_EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--out", required=True, metavar="FILE.jsonl", help="where to write the routing data")
    e.add_argument("--config", help="gateway YAML: its store and deployments (default: $SWITCHYARD_CONFIG)")
    e.add_argument("--since", metavar="DURATION", help="only requests of the last DURATION (30m, 24h, 7d); "
                   "default: all that the log keeps")
    e.add_argument("--from-jsonl", metavar="FILE", help="read the request log's JSONL sink instead of the store")
    e.add_argument("--origin", default="gateway", metavar="ORIGINS", help="whose labels count: gateway, client, "
                   "client:TENANT, comma-separated (default: gateway, the gateway's own shadow labels, which "
                   "no client can forge)")
    e.add_argument("--tenant", metavar="TENANTS", help="only these tenants' requests, comma-separated "
                   "(default: every tenant's)")
    e.set_defaults(func=cmd_logs_export)

    sp = sub.add_parser("spend", help="spend and savings from the durable ledger, as a table or CSV",
                        description=SPEND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--group-by", metavar="FIELDS", help="comma-separated: tenant, deployment, policy, "
                    "plan_kind, hour (default: tenant)")
    sp.add_argument("--since", metavar="DURATION", help="the last DURATION (30m, 24h, 7d; default 24h), in whole "
                    "hours")
    sp.add_argument("--csv", action="store_true", help="CSV instead of an aligned table")
    sp.add_argument("--config", help="gateway YAML with the redis_url (default: $SWITCHYARD_CONFIG)")
    sp.set_defaults(func=cmd_spend)

    keys_cli.add_parser(sub)

    b = sub.add_parser("bench", help="run a benchmark from benchmarks/ (e.g. routing_quality, overhead)",
                       description=BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("name", help="a benchmark in ./benchmarks (run from the repository root): routing_quality, "
                                "test_time_compute, target_tracking, overhead, rate_limits, fault_soak, fuzz")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    b.set_defaults(func=cmd_bench)
    _describe(p)
    return p


def _describe(parser: argparse.ArgumentParser) -> None:
    """Open each subcommand's --help with its line from its parent's list, when it has no text of its own:
    `switchyard demo --help` otherwise shows options and nothing of what the command does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                if child.description is None:
                    child.description = summaries.get(name)
                _describe(child)


def _command_name(args: argparse.Namespace) -> str:
    """`policy calibrate`, `router promote`, `train`: the words the user typed, for error lines."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def main(argv: list[str] | None = None) -> int:
    # The router's small matrix products run on the event loop; BLAS worker threads would only
    # spin on the other core. Set before anything imports numpy.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    args = build_parser().parse_args(argv)
    # Only `serve` may default to JSON lines; the other commands talk to a person.
    _setup_logging(getattr(args, "log_level", "warning"), args.log_format if args.command == "serve" else "text")
    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader left (`| head`): nothing to report, and nothing left to flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ConfigError as exc:
        print(f"switchyard: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except (InputError, OSError) as exc:  # a file that is missing, unreadable or not what it should be
        print(f"switchyard {_command_name(args)}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
