"""The offerer's waiting connection at a relay, following the code's nameplate.

Each code shown with a relay carries a fresh nameplate; the offerer waits at the relay
under that nameplate's token (never anything made from the secret) and hands a glued
connection to the same conversation handler a direct connection gets. When a new code
replaces the old one, the wait moves to the new nameplate; a conversation already
running keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from certpair.net.offer_events import OfferEvent, RelayStatus
from certpair.relay import RelayAddress, pairing_token
from certpair.relay.connect import RelayError
from certpair.relay.waiting import RelayWaiter

__all__ = ["OfferRelay"]

# A second joiner glued while one conversation runs hears BUSY, as on a direct port.
_MAX_ACTIVE = 2

# handle(reader, writer, remote, on_proven): on_proven() once its TLS handshake completed.
Handle = Callable[[asyncio.StreamReader, asyncio.StreamWriter, str, Callable[[], None]],
                  Awaitable[None]]


class OfferRelay:
    """Keeps the offerer waiting at ``relay`` under the current nameplate."""

    def __init__(self, relay: RelayAddress, handle: Handle,
                 on_event: Callable[[OfferEvent], None]) -> None:
        self.relay = relay
        self.remote = f"relay {relay}"
        self.handle = handle
        self.on_event = on_event
        self.task: asyncio.Task[None] | None = None
        self.waiter: RelayWaiter | None = None

    def follow(self, nameplate: str) -> None:
        """Wait under this nameplate from now on (the previous wait ends)."""
        self.stop()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
            proven: list[bool] = []
            await self.handle(reader, writer, self.remote, lambda: proven.append(True))
            return bool(proven)

        def waiting() -> None:
            self.on_event(RelayStatus(relay=str(self.relay), waiting=True, reason="",
                                      retry_in=0.0))

        def problem(error: RelayError, delay: float) -> None:
            self.on_event(RelayStatus(relay=str(self.relay), waiting=False, reason=str(error),
                                      retry_in=delay))

        self.waiter = RelayWaiter(relay=self.relay, tokens=[pairing_token(nameplate)],
                                  handle=handle, max_active=_MAX_ACTIVE, on_waiting=waiting,
                                  on_problem=problem)
        self.task = asyncio.get_running_loop().create_task(self.waiter.run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
