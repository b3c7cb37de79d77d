"""Where an exception came from: what it was raised from, and which modules its traceback went through.

The store and the litellm backend both tell an outage from a request's own fault this way (a refused
connection behind a store error; litellm's connection error raised from a transport error, or in its code
for a provider, rather than from its own check of the request).
"""

from __future__ import annotations

_CHAIN_READ = 8  # a chain is short; the bound only guards against a cycle


def causes(exc: BaseException) -> list[BaseException]:
    """What `exc` was raised from (explicitly or while handling), outermost first, `exc` not included."""
    chain: list[BaseException] = []
    seen = exc.__cause__ or exc.__context__
    while seen is not None and len(chain) < _CHAIN_READ:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def traceback_modules(exc: BaseException) -> list[str]:
    """The modules of `exc`'s traceback frames, from where it was caught to where it was raised."""
    modules = []
    tb = exc.__traceback__
    while tb is not None:
        modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    return modules
