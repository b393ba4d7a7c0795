"""The ends that wait at a relay: an offerer for its joiner, a server for its clients.

A :class:`RelayWaiter` keeps one connection waiting under each of its tokens. When the
relay glues one to a partner (``ok``), the connection is handed to ``handle`` as a new
task and a fresh one takes its place at once; at most ``max_active`` handed-over
connections run at a time (a slot waits for one to end before it goes back to the
relay), so a relay that glues many partners cannot make this end take on more work
than that. ``handle`` returns True once its connection proved itself (for pairing: the
TLS handshake completed); after each one that ended unproven (a relay that glues this
end to nobody, or to a silent partner), its place goes back to the relay only after a
delay that doubles from ``MIN_BACKOFF`` to ``MAX_BACKOFF``, reset by a proven one. A
relay that cannot be reached, or that closes a waiting connection, is retried after the
same kind of delay (reset once a wait held).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from certpair.relay.address import WAITING_SIDE, RelayAddress
from certpair.relay.connect import RelayError, open_relay

__all__ = ["MAX_BACKOFF", "MIN_BACKOFF", "RelayWaiter"]

MIN_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# A waiting connection that held this long before the relay closed it was fine: the
# next one goes back at once rather than after a grown delay.
_HELD = 10.0

# handle(reader, writer) -> whether the connection proved itself.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class RelayWaiter:
    """Waiting connections at one relay, one per token.

    Args:
        relay: the relay.
        tokens: one waiting connection is kept under each.
        handle: runs each glued connection (it owns and closes the writer); returns
            whether it proved itself.
        max_active: at most this many handed-over connections at a time.
        on_waiting: told when the relay took a waiting connection after a problem (or
            the first time).
        on_problem: told of each failure and the seconds until the next try.
    """

    def __init__(
        self, *, relay: RelayAddress, tokens: list[str], handle: Handler, max_active: int,
        on_waiting: Callable[[], None] = lambda: None,
        on_problem: Callable[[RelayError, float], None] = lambda error, delay: None,
    ) -> None:
        self.relay = relay
        self.tokens = tokens
        self.handle = handle
        self.active = asyncio.Semaphore(max_active)
        self.on_waiting = on_waiting
        self.on_problem = on_problem
        self.troubled = True  # until a first waiting connection is taken
        self.handlers: set[asyncio.Task[None]] = set()
        self.glued = 0  # connections handed over so far (for tests and benchmarks)
        self.penalty = MIN_BACKOFF  # the wait after the next unproven connection

    async def run(self) -> None:
        """Wait at the relay until cancelled (handed-over connections keep running)."""
        await asyncio.gather(*(self._slot(token) for token in self.tokens))

    def _sent(self) -> None:
        if self.troubled:
            self.troubled = False
            self.on_waiting()

    async def _slot(self, token: str) -> None:
        loop = asyncio.get_running_loop()
        delay = MIN_BACKOFF
        while True:
            await self.active.acquire()
            started = loop.time()
            try:
                reader, writer = await open_relay(self.relay, token, WAITING_SIDE,
                                                  on_sent=self._sent)
            except RelayError as exc:
                self.active.release()
                if loop.time() - started >= _HELD:
                    delay = MIN_BACKOFF
                self.troubled = True
                self.on_problem(exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            except BaseException:
                self.active.release()
                raise
            delay = MIN_BACKOFF
            self.glued += 1
            task = loop.create_task(self._run_one(reader, writer))
            self.handlers.add(task)
            task.add_done_callback(self.handlers.discard)

    async def _run_one(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        proven = False
        try:
            proven = await self.handle(reader, writer)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            try:
                if proven:
                    self.penalty = MIN_BACKOFF
                else:  # this place goes back to the relay after a growing delay
                    delay, self.penalty = self.penalty, min(self.penalty * 2, MAX_BACKOFF)
                    await asyncio.sleep(delay)
            finally:
                self.active.release()
