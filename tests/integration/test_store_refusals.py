"""A command Redis refuses by itself (a wrong argument or type) is that call's failure, not an outage: the
store's breaker is shared by every tenant, and one request's bad command opened it for all of them.
Against a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ReadOnlyError, ResponseError

from gateway.state import RedisStore, StoreUnavailable, _refused_command
from tests.support.processes import RedisServer


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    made = RedisStore(redis_server.url, timeout_s=5)
    yield made
    await made.close()


async def test_a_refused_command_fails_alone_and_leaves_the_breaker_closed(store: RedisStore) -> None:
    with pytest.raises(StoreUnavailable):
        await store.set("refusals:too-long", b"v", ttl_s=1e17)  # an expiry past Redis's 64-bit range
    await store.set("refusals:text", b"not a number")
    with pytest.raises(StoreUnavailable):
        await store.incr("refusals:text", ttl_s=60)  # ERR value is not an integer
    assert store.breaker.closed
    assert await store.get("refusals:text") == b"not a number"  # the next call is not refused


def test_refusals_that_speak_of_the_whole_server_still_count_as_it_failing() -> None:
    assert _refused_command(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert not _refused_command(ResponseError("BUSY Redis is busy running a script."))
    assert not _refused_command(ResponseError("MISCONF Redis is configured to save RDB snapshots"))
    assert not _refused_command(ResponseError("NOREPLICAS Not enough good replicas to write."))
    assert _refused_command(ResponseError("BUSYKEY Target key name already exists."))
    assert not _refused_command(ReadOnlyError("You can't write against a read only replica."))
    assert not _refused_command(ConnectionError("refused"))


def test_a_server_wide_refusal_inside_a_pipeline_still_counts_as_the_store_failing() -> None:
    """redis-py puts a pipelined command's place before Redis's reply ("Command # 1 (GET k) of pipeline caused
    error: ('BUSY ...',)"): a BUSY or MISCONF to a cache read through a pipeline read as one command's refusal."""
    from redis.asyncio.client import Pipeline

    for reply in ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
                  "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist"):
        exc = ResponseError(reply)
        Pipeline.annotate_exception(None, exc, 1, ("GET", "sy:cache:k"))
        assert str(exc).startswith("Command # 1 (GET sy:cache:k) of pipeline caused error: ")
        assert not _refused_command(exc), str(exc)
    refused = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    Pipeline.annotate_exception(None, refused, 2, ("SET", "k", "of pipeline caused error: BUSY"))
    assert _refused_command(refused)


async def test_a_call_that_finds_no_free_connection_fails_alone_and_leaves_the_breaker_closed(
        redis_server: RedisServer) -> None:
    """More store calls at once on one worker than its pool has connections wait for one, within the store's
    timeout; past it, redis-py says "No connection available." That is this process's burst, not a store that
    failed: taken for an outage, one tenant's burst opened the breaker every tenant shares, and every request
    of every tenant met a store marked down."""
    store = RedisStore(redis_server.url, timeout_s=0.2)
    pool = store._client.connection_pool
    held = [await pool.get_connection() for _ in range(pool.max_connections)]  # the burst holds them all
    try:
        with pytest.raises(StoreUnavailable, match="No connection available") as waited:
            await store.get("refusals:busy")
        assert waited.value.unsent
        assert store.breaker.closed
    finally:
        for conn in held:
            await pool.release(conn)
    assert await store.get("refusals:busy") is None  # the next call goes through
    await store.close()
