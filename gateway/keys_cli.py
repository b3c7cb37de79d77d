"""`switchyard keys create | list | revoke | rotate`: the keys admin API from a terminal.

Talks to a running gateway (`--url`, default $SWITCHYARD_URL or http://127.0.0.1:8080) with the
admin key (`--admin-key`, default $SWITCHYARD_ADMIN_KEY). Prints JSON; `create` and `rotate` print
the new key, which is shown this once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any
from urllib.parse import quote, urlencode

ENV_URL = "SWITCHYARD_URL"
ENV_ADMIN_KEY = "SWITCHYARD_ADMIN_KEY"
_TIMEOUT_S = 10.0


def _usd(raw: str) -> float:
    """--budget: a finite number of USD, 0 or more (refused here, in one line, rather than by the API)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of USD: {raw!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number of USD, 0 or more; got {raw!r}")
    return value


def _pair(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {raw!r}")
    return key, value


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"tenant": args.tenant}
    for name in ("name", "requests_per_minute", "tokens_per_minute", "expires_at"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    for name in ("policies", "deployments"):
        if getattr(args, name) is not None:
            body[name] = [v.strip() for v in getattr(args, name).split(",") if v.strip()]
    if args.budget is not None:
        body["budget"] = {"usd": args.budget, "period": args.period or "total"}
    if args.metadata:
        body["metadata"] = dict(args.metadata)
    return body


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    # Stripped: a key read from a file keeps its line end (a CRLF file's "\r" survives `$(cat key)`).
    key = (args.admin_key or os.environ.get(ENV_ADMIN_KEY) or "").strip()
    if not key:
        print(f"switchyard keys: give the admin key with --admin-key or ${ENV_ADMIN_KEY}", file=sys.stderr)
        return 2
    if (bad := _unsendable(key)) is not None:
        # A header carries printable ASCII alone: a curly quote pasted with the key ended in a traceback, and
        # a line break inside it was refused in a message that printed the whole admin key.
        print(f"switchyard keys: the admin key holds {bad}, which an HTTP header cannot carry: "
              "check how it was pasted or stored", file=sys.stderr)
        return 2
    url = (args.url or os.environ.get(ENV_URL) or "http://127.0.0.1:8080").rstrip("/")
    import httpx  # deferred: the CLI's other commands do not need it

    try:
        resp = httpx.request(method, url + path, json=body, timeout=_TIMEOUT_S,
                             headers={"authorization": f"Bearer {key}"})
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is no HTTPError: `--url :::` was a traceback
        print(f"switchyard keys: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.is_success:
        print(json.dumps(answer, indent=2) if answer is not None else resp.text)
        return 0
    print(f"switchyard keys: {_refusal(resp.status_code, answer, resp.text)}", file=sys.stderr)
    return 1


def _unsendable(key: str) -> str | None:
    """What in `key` an HTTP header cannot carry (described, never quoted: it is a secret), or None."""
    for i, ch in enumerate(key):
        if not " " <= ch <= "~":  # a space inside is sent (the gateway reads the key after "Bearer ")
            kind = "a control character" if ord(ch) < 0x20 or ch == "\x7f" else \
                f"the non-ASCII character U+{ord(ch):04X}"
            return f"{kind} at position {i + 1}"
    return None


def _refusal(status: int, answer: Any, text: str) -> str:
    """A refusal in one line (an error printed as an indented JSON block took eight): status, type, code
    and message of an OpenAI-style error body, else the body as it came."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {status}: {' '.join(text.split())[:500]}"
    said = " ".join(str(error[k]) for k in ("type", "code") if error.get(k))
    return f"HTTP {status}{' ' + said if said else ''}: {' '.join(str(error.get('message', '')).split())}"


def cmd_keys(args: argparse.Namespace) -> int:
    command = args.keys_command
    if command == "create":
        if args.period is not None and args.budget is None:  # else the key was made with no budget at all
            print(f"switchyard keys create: --period {args.period} needs --budget USD", file=sys.stderr)
            return 2
        return _call(args, "POST", "/admin/keys", create_body(args))
    if command == "list":
        return _call(args, "GET", "/admin/keys" + (f"?{urlencode({'tenant': args.tenant})}" if args.tenant else ""))
    key_id = quote(args.id, safe="")  # an id is one path segment: `../x` must not reach another route
    if command == "revoke":
        return _call(args, "DELETE", f"/admin/keys/{key_id}")
    return _call(args, "POST", f"/admin/keys/{key_id}/rotate")


def add_parser(sub: Any) -> None:
    k = sub.add_parser("keys", help="API keys on a running gateway: create, list, revoke, rotate")
    ks = k.add_subparsers(dest="keys_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", help=f"the gateway (default ${ENV_URL} or http://127.0.0.1:8080)")
        p.add_argument("--admin-key", help=f"the admin key (default ${ENV_ADMIN_KEY})")
        p.set_defaults(func=cmd_keys)
        return p

    c = common(ks.add_parser("create", help="create a key (printed once)"))
    c.add_argument("--tenant", required=True, help="the tenant the key belongs to (narrowed by it if configured)")
    c.add_argument("--name", help="a label for people (not secret)")
    c.add_argument("--policies", help="comma-separated policies the key may use (default: its tenant's)")
    c.add_argument("--deployments", help="comma-separated deployments it may pin by name")
    c.add_argument("--budget", metavar="USD", type=_usd, help="spend limit in USD per --period")
    c.add_argument("--period", choices=("day", "week", "month", "total"),
                   help="the --budget's UTC calendar period (default: total)")
    c.add_argument("--requests-per-minute", type=int, help="the key's own request rate limit")
    c.add_argument("--tokens-per-minute", type=int, help="the key's own token rate limit")
    c.add_argument("--expires-at", metavar="ISO8601", help="when the key stops working (UTC if no offset)")
    c.add_argument("--metadata", action="append", metavar="KEY=VALUE", type=_pair,
                   help="a string to keep with the record (repeatable)")
    lst = common(ks.add_parser("list", help="every key (never the key itself: its prefix and hash prefix)"))
    lst.add_argument("--tenant", help="only this tenant's keys")
    id_help = "the key's id: `id` in `keys list`, the ID of sk-sy-ID-SECRET"
    common(ks.add_parser("revoke", help="revoke a key: refused by every replica within a second")).add_argument(
        "id", help=id_help)
    common(ks.add_parser("rotate", help="a new secret for a key (printed once); the old one stops")).add_argument(
        "id", help=id_help)
