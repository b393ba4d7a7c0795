"""Helpers for driver tests over real loopback TLS: run an offerer, watch its events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from certpair.codes import Mode
from certpair.identity import Identity
from certpair.net import Listening, OfferEvent, run_offer
from certpair.store import Peer, TrustStore


@dataclass
class RunningOffer:
    """An offerer task and the events it has reported."""

    task: asyncio.Task[Peer]
    events: asyncio.Queue[OfferEvent]
    listening: Listening

    async def next_event(self) -> OfferEvent:
        return await asyncio.wait_for(self.events.get(), 10)

    async def next_listening(self) -> Listening:
        while True:
            event = await self.next_event()
            if isinstance(event, Listening):
                return event


@contextlib.asynccontextmanager
async def running_offer(
    identity: Identity, store: TrustStore, mode: Mode = Mode.CPACE, **kwargs: Any
) -> AsyncIterator[RunningOffer]:
    """Start ``run_offer`` on 127.0.0.1 with a free port; cancel it on exit."""
    events: asyncio.Queue[OfferEvent] = asyncio.Queue()
    task = asyncio.ensure_future(
        run_offer(identity=identity, store=store, mode=mode, host="127.0.0.1", port=0,
                  on_event=events.put_nowait, **kwargs)
    )
    first = await asyncio.wait_for(events.get(), 10)
    assert isinstance(first, Listening)
    try:
        yield RunningOffer(task=task, events=events, listening=first)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
