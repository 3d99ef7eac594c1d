"""What the task routes do: submit, look up, cancel and list tasks without blocking the loop."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from trustcard.api.broker_publish import Command
from trustcard.api.errors import DependencyUnavailable
from trustcard.api.record_and_publish import (
    RecordAndPublish,
    ReplicasMissing,
    ScriptRefused,
    confirm_on_replicas,
)
from trustcard.api.resources import ApiResources
from trustcard.config import redact_url
from trustcard.observability.api_metrics import observe_publish, record_submission_error
from trustcard.observability.tracing import current_trace_ids
from trustcard.task_model.registry import (
    TaskRecord,
    forget_record,
    load_with_meta,
    save_cancellation,
    save_record,
)
from trustcard.task_model.status import TaskView, build_view

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "Redis did not answer": redis-py's, kombu's (OSError subclasses) and timeouts.
UNREACHABLE = (RedisError, OSError, TimeoutError, ConnectionError)
# A long-poll reads its subscription in slices shorter than REDIS_TIMEOUT_SECONDS' minimum.
WAIT_SLICE_SECONDS = 1.0


async def _guarded(
    dependency: str, url: str, limit_seconds: float, call: Callable[[], Awaitable[T]]
) -> T:
    """Run `call` within `limit_seconds`; any connection failure becomes DependencyUnavailable."""
    try:
        async with asyncio.timeout(limit_seconds):
            return await call()
    except TimeoutError:
        raise DependencyUnavailable(
            dependency,
            f"no answer from {redact_url(url)} within {limit_seconds:g} s",
            timed_out=True,
        ) from None
    except UNREACHABLE as exc:
        raise DependencyUnavailable(
            dependency,
            f"{redact_url(url)}: {type(exc).__name__}: {exc}",
            maybe_sent=not failed_to_connect(exc),
        ) from None
    except Exception as exc:
        # kombu wraps transport errors in its own types (OperationalError and friends).
        if type(exc).__module__.startswith(("kombu", "celery", "redis")):
            raise DependencyUnavailable(
                dependency,
                f"{redact_url(url)}: {type(exc).__name__}: {exc}",
                maybe_sent=not failed_to_connect(exc),
            ) from None
        raise


def failed_to_connect(exc: BaseException) -> bool:
    """True when no connection was made, so no command of this call reached Redis.

    redis-py words every connect failure so ("Error 111 connecting to host:port.",
    "Timeout connecting to server"); a failure after connecting (a reset, a lost reply)
    may come after Redis ran the command.
    """
    return isinstance(exc, ConnectionRefusedError) or "connecting to" in str(exc)


async def submit(
    res: ApiResources,
    name: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    task_id: str | None = None,
    owner: str | None = None,
) -> TaskRecord:
    """Record the id, then publish the task (see broker_publish: no blocking I/O on the loop).

    With the broker and the backend on one Redis server, both writes are one script (see
    record_and_publish); otherwise the record is written, then the message.
    `task_id`: an id chosen by the caller (the analysis routes store it before publishing).
    `owner`: the submitting key's id; only it (and admin keys) may read or cancel the task.
    """
    settings = res.settings
    await _broker_has_room(res)
    # The HTTP span's ids: the publish and the task's run continue this trace.
    record = TaskRecord.new(task_id or str(uuid.uuid4()), name, current_trace_ids(), owner)
    commands = None
    combined = res.record_and_publish
    if combined is not None and combined.enabled:
        commands = res.loop_publisher.capture(name, record.task_id, args, kwargs)
        if (
            commands is not None
            and combined.accepts(commands)
            and await _record_and_publish(res, combined, record, commands)
        ):
            return record
    try:
        await _guarded(
            "result backend",
            settings.result_backend_url,
            settings.REDIS_TIMEOUT_SECONDS,
            lambda: save_record(res.backend, record, settings.RESULT_EXPIRES),
        )
    except DependencyUnavailable as exc:
        record_submission_error(exc.dependency, exc.timed_out)
        # No message was sent: not queued, whatever became of the record.
        if exc.maybe_sent:
            await _forget_quietly(res, record.task_id)
        raise

    def publish() -> Awaitable[None]:
        if commands is not None:  # already built for the script the server refused
            return res.loop_publisher.execute(commands)
        on_thread = partial(_in_publisher, res)
        return res.loop_publisher.send_task(name, record.task_id, args, kwargs, on_thread)

    started = time.perf_counter()
    try:
        await _guarded("broker", settings.broker_url, settings.REDIS_TIMEOUT_SECONDS, publish)
    except DependencyUnavailable as exc:
        record_submission_error(exc.dependency, exc.timed_out)
        if not _unknown_or_not_queued(exc, record.task_id):
            # The publish never reached Redis: the id must not look issued.
            await _forget_quietly(res, record.task_id)
        raise
    observe_publish(name, time.perf_counter() - started)
    if combined is not None and combined.wait_replicas:
        await _confirm_on_replicas(res, combined, record)
    return record


async def _confirm_on_replicas(
    res: ApiResources, combined: RecordAndPublish, record: TaskRecord
) -> None:
    """REDIS_WAIT_REPLICAS on the two-write path; 503 (broker, outcome unknown) when unmet."""
    settings = res.settings
    try:
        await _guarded(
            "broker",
            settings.broker_url,
            settings.REDIS_TIMEOUT_SECONDS + combined.wait_timeout_ms / 1000,
            lambda: confirm_on_replicas(
                res.backend,
                record,
                settings.RESULT_EXPIRES,
                combined.wait_replicas,
                combined.wait_timeout_ms,
            ),
        )
    except DependencyUnavailable as exc:
        record_submission_error(exc.dependency, exc.timed_out)
        exc.task_id = record.task_id  # published: it may run whatever WAIT said
        raise
    except ReplicasMissing as missing:
        raise _replicas_missing(res, record, missing) from None


def _replicas_missing(
    res: ApiResources, record: TaskRecord, missing: ReplicasMissing
) -> DependencyUnavailable:
    # On the master, not (yet) on enough replicas: a failover now may or may not keep it.
    record_submission_error("broker", timed_out=False)
    exc = DependencyUnavailable(
        "broker", f"{redact_url(res.settings.broker_url)}: {missing}", maybe_sent=True
    )
    exc.task_id = record.task_id
    return exc


def _unknown_or_not_queued(exc: DependencyUnavailable, task_id: str) -> bool:
    """True (and the 503 names the id, outcome unknown) when the message may be queued.

    The record is kept then: with the script, record and message are written together, so
    GET /tasks/{id} answers 404 exactly when the message was never queued.
    """
    if exc.maybe_sent:
        exc.task_id = task_id
    return exc.maybe_sent


async def _broker_has_room(res: ApiResources) -> None:
    """503 naming the broker as full above REDIS_MEMORY_HIGH_WATERMARK (see broker_memory)."""
    settings = res.settings
    full = await _guarded(
        "broker",
        settings.broker_url,
        settings.REDIS_TIMEOUT_SECONDS,
        lambda: res.broker_memory.full(res.broker),
    )
    if full is not None:
        record_submission_error("broker", timed_out=False)
        raise DependencyUnavailable("broker", f"{redact_url(settings.broker_url)}: {full}")


async def _record_and_publish(
    res: ApiResources, combined: RecordAndPublish, record: TaskRecord, commands: list[Command]
) -> bool:
    """Both writes in one script; False when the server refused the script (write separately).

    One server holds both, so a failure names the result backend, whose write comes first (as
    the separate writes would when Redis is down).
    """
    settings = res.settings
    started = time.perf_counter()
    # WAIT (REDIS_WAIT_REPLICAS) may take its whole timeout on top of the script.
    limit = settings.REDIS_TIMEOUT_SECONDS + combined.wait_timeout_ms / 1000
    try:
        await _guarded(
            "result backend",
            settings.result_backend_url,
            limit if combined.wait_replicas else settings.REDIS_TIMEOUT_SECONDS,
            lambda: combined.write(record, settings.RESULT_EXPIRES, commands),
        )
    except ScriptRefused:
        return False
    except ReplicasMissing as missing:
        raise _replicas_missing(res, record, missing) from None
    except DependencyUnavailable as exc:
        record_submission_error(exc.dependency, exc.timed_out)
        _unknown_or_not_queued(exc, record.task_id)
        raise
    observe_publish(record.name, time.perf_counter() - started)
    return True


def _in_publisher(res: ApiResources, call: Callable[[], T]) -> Awaitable[T]:
    """Run a blocking broker call on the publisher threads, keeping the trace context."""
    context = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(res.publisher, context.run, call)


async def _forget_quietly(res: ApiResources, task_id: str) -> None:
    try:
        async with asyncio.timeout(res.settings.REDIS_TIMEOUT_SECONDS):
            await forget_record(res.backend, task_id)
    except (*UNREACHABLE, TimeoutError):
        log.warning("could not drop the record of unpublished task %s", task_id)


async def lookup(res: ApiResources, task_id: str) -> TaskView | None:
    """The task's current view, or None if this service never issued the id (or it expired)."""
    loaded = await _load(res, task_id)
    return build_view(*loaded) if loaded is not None else None


LoadedTask = tuple[TaskRecord, dict[str, Any] | None]


async def _load(res: ApiResources, task_id: str) -> LoadedTask | None:
    backend = res.celery.backend
    meta_key = backend.get_key_for_task(task_id).decode()
    settings = res.settings
    record, raw_meta = await _guarded(
        "result backend",
        settings.result_backend_url,
        settings.REDIS_TIMEOUT_SECONDS,
        lambda: load_with_meta(res.backend, task_id, meta_key),
    )
    if record is None:
        return None
    return record, _decode_meta(backend, task_id, raw_meta)


async def wait_until_finished(res: ApiResources, task_id: str, seconds: float) -> TaskView | None:
    """Long-poll: the view as soon as the task is finished, or after `seconds` at the latest.

    Celery's Redis backend PUBLISHes every state it stores on the channel named like the result
    key; we subscribe before reading the state, so no update can slip between read and wait.
    The subscriber connection comes from, and goes back to, a pool kept open between waits.
    """
    pubsub = res.subscribers.acquire()
    try:
        view = await _wait_on(res, pubsub, task_id, seconds)
    except BaseException:
        res.subscribers.discard(pubsub)
        raise
    res.subscribers.release(pubsub)
    return view


async def _wait_on(
    res: ApiResources, pubsub: PubSub, task_id: str, seconds: float
) -> TaskView | None:
    backend = res.celery.backend
    settings = res.settings

    def guarded(call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return _guarded(
            "result backend", settings.result_backend_url, settings.REDIS_TIMEOUT_SECONDS, call
        )

    await guarded(lambda: pubsub.subscribe(backend.get_key_for_task(task_id)))
    # The state is read on another connection: until Redis confirms the SUBSCRIBE it may serve
    # that read first, and a result published in between would be missed until the deadline.
    await guarded(lambda: _subscription_confirmed(pubsub))
    loaded = await _load(res, task_id)
    if loaded is None:
        return None
    record, meta = loaded
    view = build_view(record, meta)
    deadline = time.monotonic() + seconds
    while not view.status.finished:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            # A cancel of a task no worker has seen changes only our record: read it too.
            return await lookup(res, task_id)
        read = partial(
            pubsub.get_message,
            ignore_subscribe_messages=True,
            timeout=min(remaining, WAIT_SLICE_SECONDS),
        )
        message = await guarded(read)
        if message is not None and message.get("type") == "message":
            view = build_view(record, _decode_meta(backend, task_id, message["data"]))
    return view


async def _subscription_confirmed(pubsub: PubSub) -> None:
    """Read this connection's replies until the subscribe confirmation (it comes first).

    Bounded by the caller's `guarded` timeout (503 naming the result backend).
    """
    while True:
        message = await pubsub.get_message(timeout=1.0)
        if message is not None and message.get("type") == "subscribe":
            return


def _decode_meta(backend: Any, task_id: str, raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        meta: dict[str, Any] = backend.decode_result(raw)
    except Exception as exc:  # a result we cannot read must not turn into a 500
        log.warning("unreadable result meta for %s: %s", task_id, exc)
        return {"status": "FAILURE", "result": f"unreadable result: {type(exc).__name__}"}
    return meta


async def cancel(res: ApiResources, view: TaskView) -> None:
    """Mark the task cancelled (for workers started later) and broadcast a revoke to live ones."""
    settings = res.settings
    record = TaskRecord(
        view.task_id,
        view.name,
        view.submitted_at or "",
        trace_id=view.trace_id,
        span_id=view.span_id,
        owner=view.owner,
    ).cancelled()
    await _guarded(
        "result backend",
        settings.result_backend_url,
        settings.REDIS_TIMEOUT_SECONDS,
        lambda: save_cancellation(res.backend, record, settings.RESULT_EXPIRES),
    )

    def revoke() -> None:
        # terminate=True: a running task's pool process gets SIGTERM; a queued one is skipped.
        res.celery.control.revoke(view.task_id, terminate=True, signal="SIGTERM")

    await _guarded(
        "broker",
        settings.broker_url,
        settings.REDIS_TIMEOUT_SECONDS,
        lambda: run_in_threadpool(revoke),
    )


async def owned_by(
    res: ApiResources, active: dict[str, list[dict[str, Any]]], owner: str
) -> dict[str, list[dict[str, Any]]]:
    """Only the active tasks whose record names `owner` (records are looked up together)."""
    ids = [str(task.get("id")) for tasks in active.values() for task in tasks]
    loaded = await asyncio.gather(*(_load(res, task_id) for task_id in ids))
    mine = {
        task_id
        for task_id, found in zip(ids, loaded, strict=True)
        if found and found[0].owner == owner
    }
    return {
        worker: [task for task in tasks if str(task.get("id")) in mine]
        for worker, tasks in active.items()
    }


async def active_tasks(res: ApiResources) -> dict[str, list[dict[str, Any]]]:
    """Ask live workers what they run; an empty dict when none answers within the timeout."""
    settings = res.settings
    wait = settings.INSPECT_TIMEOUT_SECONDS

    def inspect() -> dict[str, list[dict[str, Any]]]:
        replies = res.celery.control.inspect(timeout=wait).active()
        return dict(replies or {})

    # Fail fast when Redis is down: kombu's broadcast would spend the whole budget retrying.
    await _guarded(
        "broker", settings.broker_url, settings.REDIS_TIMEOUT_SECONDS, lambda: res.broker.ping()
    )
    return await _guarded(
        "broker",
        settings.broker_url,
        wait + settings.REDIS_TIMEOUT_SECONDS,
        lambda: run_in_threadpool(inspect),
    )
