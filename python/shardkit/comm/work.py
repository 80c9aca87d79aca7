"""Async handles: every collective of a group runs in call order, either on
the caller's thread (nothing pending) or on the group's worker thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class Work:
    """Handle of an asynchronous collective; ``wait()`` blocks until it is done."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the collective finished; re-raise its error.

        Returns True. Raises TimeoutError if ``timeout`` seconds pass first
        (the collective keeps running; the transport's own timeout bounds it).
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"collective still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return True

    def is_completed(self) -> bool:
        """True once the collective finished (successfully or not)."""
        return self._done.is_set()

    def _finish(self, error: BaseException | None) -> None:
        self._error = error
        self._done.set()


class Executor:
    """Runs one group's collectives in the order they were issued."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], None]) -> Work:
        work = Work()
        with self._lock:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="shardkit-comm", daemon=True)
                self._thread.start()
        self._queue.put((fn, work))
        return work

    def run(self, fn: Callable[[], None]) -> None:
        """Run now on this thread, or after the pending async ones."""
        with self._lock:
            # On the worker thread itself (a queued job that runs collectives) it is this job's turn.
            inline = self._pending == 0 or threading.current_thread() is self._thread
        if inline:
            fn()
        else:
            self.submit(fn).wait()

    def _loop(self) -> None:
        while True:
            fn, work = self._queue.get()
            if fn is None:
                return
            try:
                fn()
                error = None
            except BaseException as exc:  # noqa: BLE001 - handed to wait()
                error = exc
            with self._lock:
                self._pending -= 1
            work._finish(error)

    def shutdown(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put((None, None))
            thread.join()
