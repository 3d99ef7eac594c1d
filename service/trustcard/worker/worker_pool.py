"""The worker's prefork pool: Celery's, plus metrics hooks and child recycling without stalls.

Selected with `worker_pool = "trustcard.worker.worker_pool:TaskPool"` (a supported Celery setting).

Metrics: every job's accept/result/error callback runs in the main process; we wrap them to
count outcomes there (trustcard.observability.worker_metrics).

Recycling: with worker_max_tasks_per_child, stock Celery 5.7 / billiard 4.3 stall 0.1-5 s each
time a child is replaced (docs/recycling-stall.md has the evidence and the upstream fixes):
  1. the parent writes the next job into the pipe of a child that has left its work loop,
     and gets it back only after reaping that child;
  2. the exit sentinel can fire before waitpid() sees the child, and the reap then waits for
     the 5 s maintain_pool timer;
  3. the exiting child polls the parent's READY counter every 100 ms;
  4. flushing a dead child's pipe waits 10 ms in select();
  5. the parent runs a full gc.collect() before every fork (~30 ms on a warm heap).
The subclasses below fix each one. They rely on private attributes of celery 5.7 / billiard
4.3 (_all_inqueues, _fileno_to_inq, _on_ready_counters, _maxtasksperchild, _popen), which the
recycling tests exercise, so an upgrade that renames them fails the tests, not production.
"""

from __future__ import annotations

import errno
import gc
import heapq
import time
from collections.abc import Callable
from typing import Any

from billiard import pool as billiard_pool
from celery.concurrency import asynpool, prefork

from trustcard.observability.worker_metrics import WORKER_METRICS, Outcome, WorkerMetrics, classify

MAINTAIN_POOL_INTERVAL = 1.0  # AsynPool's default is 5 s; this is the fallback reaper now.
REAP_BUSY_WAIT = 0.02  # wait this long for a child whose exit sentinel fired to become reapable,
REAP_RETRY_INTERVAL = 0.005  # then retry the reap every 5 ms
REAP_RETRIES = 400  # for at most ~2 s before leaving it to the timer.
EXIT_POLL_MAX = 0.02  # exiting child: poll the READY counter 0.5 ms -> 20 ms (billiard: 100 ms).
EXIT_POLL_DEADLINE = 30.0  # billiard gives up after 300 x 0.1 s as well.
# Drop cancelled time-limit timers from the event loop's heap every this many finished tasks.
TIMER_COMPACT_EVERY = 256


class RecyclingWorker(asynpool.Worker):  # type: ignore[misc]
    """Pool child whose exit handshake polls with a short backoff instead of 100 ms sleeps."""

    def _ensure_messages_consumed(self, completed: int) -> bool:
        counter = self.on_ready_counter
        if not counter:
            return False
        deadline = time.monotonic() + EXIT_POLL_DEADLINE
        delay = 0.0005
        while counter.value < completed:
            if time.monotonic() > deadline:
                billiard_pool.warning("could not ensure all messages were consumed before exiting")
                return False
            time.sleep(delay)
            delay = min(delay * 2, EXIT_POLL_MAX)
        return True


class RecyclingAsynPool(asynpool.AsynPool):  # type: ignore[misc]
    """AsynPool that never routes a job to a retiring child and reaps exits promptly."""

    Worker = RecyclingWorker

    def on_job_ready(self, job: Any, i: int, obj: Any, inqW_fd: int) -> None:
        super().on_job_ready(job, i, obj, inqW_fd)
        maxtasks = self._maxtasksperchild
        if not maxtasks:
            return
        proc = self._fileno_to_inq.get(inqW_fd)
        counter = self._on_ready_counters.get(proc.pid) if proc is not None else None
        # billiard's on_ready() increments the counter right after this call: at maxtasks the
        # child has left its loop, so stop writing to it (on_process_alive re-adds the fd
        # for its replacement).
        if counter is not None and counter.value + 1 >= maxtasks:
            self._all_inqueues.discard(inqW_fd)

    def _event_process_exit(self, hub: Any, proc: Any) -> None:
        popen = proc._popen
        if popen is not None and popen.returncode is None:
            # The kernel closes the sentinel pipe before the child becomes a zombie, so
            # waitpid(WNOHANG) can still miss it for a moment.
            deadline = time.monotonic() + REAP_BUSY_WAIT
            while popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0002)
        super()._event_process_exit(hub, proc)
        if proc in self._pool:
            self._retry_reap(hub, proc, 0)

    def _retry_reap(self, hub: Any, proc: Any, attempt: int) -> None:
        def retry() -> None:
            if proc in self._pool and self._state == billiard_pool.RUN:
                self.maintain_pool()
                if proc in self._pool and attempt < REAP_RETRIES:
                    self._retry_reap(hub, proc, attempt + 1)

        hub.call_later(REAP_RETRY_INTERVAL, retry)

    def _create_timelimit_handlers(self, hub: Any) -> None:
        """Also compact the hub's timer heap as tasks finish.

        Every task arms a soft-time-limit timer; when the task ends Celery only marks the entry
        cancelled, and kombu's heap keeps it until its deadline (240 s by default): ~0.5 MiB per
        1000 tasks retained by the main process and copied into every forked child.
        """
        super()._create_timelimit_handlers(hub)
        # Set by the base method just above (a closure over Celery's job -> timer map).
        discard_tref: Callable[[Any], None] = self._discard_tref  # type: ignore[has-type]
        timer = hub.timer
        finished = 0

        def discard_and_compact(job: Any) -> None:
            nonlocal finished
            discard_tref(job)
            finished += 1
            if finished >= TIMER_COMPACT_EVERY:
                finished = 0
                drop_cancelled_timers(timer)

        self._discard_tref = discard_and_compact
        self.on_timeout_cancel = lambda result: discard_and_compact(result._job)

    def _track_child_process(self, proc: Any, hub: Any) -> None:
        # A child whose exit was handled (_untrack_child_process set _sentinel_poll to None)
        # and that is not reaped yet has nothing left to watch. Stock celery 5.7 passes that
        # None to hub.add_reader when the consumer re-registers the pool after a broker
        # reconnect (asynpool.py:578, :606); the ValueError is not among the errors caught at
        # asynpool.py:226 and the worker exited ("Unrecoverable error: ValueError('file
        # descriptor is None')", Sentinel partition test: a child was being recycled as the
        # consumer reconnected). The reaper replaces the child as usual.
        if getattr(proc, "_sentinel_poll", 0) is None:
            return
        super()._track_child_process(proc, hub)

    @property
    def timers(self) -> dict[Callable[[], None], float]:
        return {self.maintain_pool: MAINTAIN_POOL_INTERVAL}

    def process_flush_queues(self, proc: Any) -> None:
        if proc._is_alive():
            super().process_flush_queues(proc)
            return
        # A dead child wrote everything it ever will: drain without select() timeouts.
        reader = proc.outq._reader
        on_state_change = self._result_handler.on_state_change
        while not reader.closed and self._state != billiard_pool.TERMINATE:
            readable, _, _ = asynpool._select({reader}, None, {reader}, timeout=0)
            if not readable:
                break
            try:
                message = reader.recv()
            except (OSError, EOFError) as exc:
                if getattr(exc, "errno", None) == errno.EINTR:
                    continue
                break
            if message is None:
                break
            on_state_change(message)


def drop_cancelled_timers(timer: Any) -> None:
    """Remove cancelled entries from a kombu Timer's heap, in place.

    In place because the hub's running schedule iterator holds this very list.
    """
    queue = timer._queue
    live = [event for event in queue if not event[2].canceled]
    if len(live) < len(queue):
        queue[:] = live
        heapq.heapify(queue)


def freeze_parent_heap() -> None:
    """Make AsynPool's gc.collect() before each fork cheap: freeze what start-up allocated."""
    gc.collect()
    gc.freeze()


class TaskPool(prefork.TaskPool):  # type: ignore[misc]
    """Prefork TaskPool with the recycling fixes and per-job metrics callbacks."""

    Pool = RecyclingAsynPool
    metrics: WorkerMetrics = WORKER_METRICS

    def on_start(self) -> None:
        super().on_start()
        self.metrics.pool_processes = lambda: len(self._pool._pool) if self._pool else 0

    def apply_async(self, target: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # Celery's Request passes (task name, task id, request dict, body, ...) as args.
        task_name, task_id, request = args[0], args[1], args[2]
        metrics = self.metrics
        accept = options.get("accept_callback")
        on_result = options.get("callback")
        on_error = options.get("error_callback")

        def accepted(pid: int, time_accepted: float) -> None:
            started_at = time.time() - (time.monotonic() - time_accepted)
            metrics.on_started(task_id, task_name, request, started_at)
            if accept is not None:
                accept(pid, time_accepted)

        def finished(failed_retval_runtime: tuple[Any, Any, float], **kw: Any) -> None:
            failed, retval, runtime = failed_retval_runtime
            if failed:
                exc = retval.exception
                metrics.on_finished(task_id, task_name, classify(exc), runtime, exc)
            else:
                metrics.on_finished(task_id, task_name, Outcome.SUCCEEDED, runtime)
            if on_result is not None:
                on_result(failed_retval_runtime, **kw)

        def errored(exc_info: Any, **kw: Any) -> None:
            exc = exc_info.exception
            metrics.on_finished(task_id, task_name, classify(exc), None, exc)
            if on_error is not None:
                on_error(exc_info, **kw)

        options.update(accept_callback=accepted, callback=finished, error_callback=errored)
        return super().apply_async(target, args, kwargs, **options)
