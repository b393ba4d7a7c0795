"""The one way long-running commands (``serve``, ``tunnel serve``, ``tunnel connect``)
write their standard output: never in the way of a connection.

Connections put lines on a bounded queue and return at once; one thread writes them.
When nobody reads stdout (a full pipe), that thread waits in the kernel and the queue
fills; lines beyond :data:`BACKLOG` are dropped and counted, and the next line written
says how many (``{"event": "dropped", "lines": N}`` with ``--json``). Serving goes on.

Lines put within :data:`GATHER` of the last write go out together in the next one: a
busy tunnel wakes its writer and calls ``write()`` once per few milliseconds, not once
per line (two lines per short connection cost each tunnel end ~0.15 ms of CPU, ~10 %
of such a connection: docs/PERFORMANCE.md). A line waits at most that long.

The thread writes to the file descriptor itself (``os.write``), not through
``sys.stdout``: a daemon thread stuck in a buffered write would hold that buffer's lock
when the interpreter exits, and the exit would abort. At the end a command gives the
queue a bounded time to drain (:meth:`LineWriter.close`), so a reader gets every line
and an unread pipe does not keep the process alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
import time
from typing import Any

import click

__all__ = ["BACKLOG", "GATHER", "LineWriter"]

# Lines waiting for stdout; beyond this, lines are dropped and counted, never waited for.
BACKLOG = 10000
# After a write, the writer lets lines gather this long (seconds) before the next one.
GATHER = 0.005
_BATCH = 1000  # lines per write at most
_DRAIN = 2.0
_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(ensure_ascii=False) makes one per call

Line = dict[str, Any] | str


class LineWriter:
    """stdout written by one thread from a bounded queue (see the module docs).

    ``put`` never blocks; lines are written in the order they were put.
    """

    def __init__(self, *, as_json: bool, backlog: int = BACKLOG) -> None:
        self.as_json = as_json
        self._lines: queue.Queue[Line | None] = queue.Queue(backlog)
        self._dropped = 0
        self._lock = threading.Lock()
        self._fd = _stdout_fd()
        self._thread = threading.Thread(target=self._write, name="certpair-output",
                                        daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines dropped and not yet reported."""
        with self._lock:
            return self._dropped

    def put(self, line: Line) -> None:
        """Queue one line (a dict becomes a JSON line); drop and count it when full."""
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            with self._lock:
                self._dropped += 1

    def close(self, timeout: float = _DRAIN) -> None:
        """Let the queue drain for at most ``timeout`` seconds, then stop writing."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._lines.put(None, timeout=max(0.0, timeout))
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _write(self) -> None:
        ended = False
        while not ended:
            lines: list[Line] = []
            line = self._lines.get()
            while line is not None:
                lines.append(line)
                if len(lines) >= _BATCH:
                    break
                try:
                    line = self._lines.get_nowait()
                except queue.Empty:
                    break
            ended = line is None
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            if dropped:
                lines.insert(0, {"event": "dropped", "lines": dropped} if self.as_json else
                             f"... {dropped} lines not shown (output not read fast enough)")
            if lines:
                self._emit("".join(_JSON.encode(each) + "\n" if isinstance(each, dict)
                                   else each + "\n" for each in lines))
            if not ended:
                time.sleep(GATHER)  # lines put meanwhile go out together, in one write

    def _emit(self, text: str) -> None:
        if self._fd is None:  # stdout is not a file (a test runner's capture)
            with contextlib.suppress(OSError, ValueError):
                click.echo(text, nl=False)
            return
        data = memoryview(text.encode("utf-8", "replace"))
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError:  # the reader went away: drop output, keep serving
            pass


def _stdout_fd() -> int | None:
    try:
        sys.stdout.flush()  # what was printed before goes first
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return None
