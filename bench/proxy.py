"""A userspace TCP proxy that delays every byte by a fixed time in each direction.

``tc netem`` is unavailable here, so round trips are simulated in userspace: bytes
read at time t are written at t + delay, in order, without blocking later reads.
Listens on loopback only. :func:`proxied_rtt` is the round trip through such a proxy,
the baseline of the figures measured through one.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from types import TracebackType

_LOOPBACK = "127.0.0.1"


class DelayProxy:
    """Forward 127.0.0.1:<port> to a target, adding ``delay`` seconds each way."""

    def __init__(self, target_host: str, target_port: int, delay: float) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the injected latency itself
                if not data:
                    dst.close()
                    return
                dst.write(data)
                await dst.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await src.read(65536)
                queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.CancelledError):
            sender.cancel()
            dst.close()


async def proxied_rtt(delay: float, repeats: int = 5) -> float:
    """Median time of a 1-byte echo through a fresh DelayProxy: the RTT as the proxy
    really delivers it (timer granularity included), measured like the pairings."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, _LOOPBACK, 0)
    times = []
    async with DelayProxy(_LOOPBACK, server.sockets[0].getsockname()[1], delay) as proxy:
        reader, writer = await asyncio.open_connection(_LOOPBACK, proxy.port)
        for _ in range(repeats):
            start = time.perf_counter()
            writer.write(b"x")
            await reader.readexactly(1)
            times.append(time.perf_counter() - start)
        writer.close()
    server.close()
    return statistics.median(times)
