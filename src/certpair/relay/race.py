"""Direct first, the relay after a short wait: the one room that decides the order.

As magic-wormhole's transit connector does: the direct address is tried at once, the
relay after ``RELAY_DELAY`` seconds (or at once when the direct attempt has failed),
the first connection that is up wins and the other is closed. "Up" is TCP connected
for the direct path and ``ok`` from the relay for the relay path; the TLS handshake
runs afterwards on the winner only, so the other end never sees two conversations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from certpair.errors import NetworkError
from certpair.ports import cannot_reach
from certpair.relay.address import CONNECTING_SIDE, RelayAddress, Route
from certpair.relay.connect import open_relay

__all__ = ["RELAY_DELAY", "Route", "Streams", "connect_first"]

# magic-wormhole waits about as long before it tries its relay.
RELAY_DELAY = 2.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _direct(host: str, port: int) -> Streams:
    try:
        return await asyncio.open_connection(host, port)
    except OSError as exc:
        raise cannot_reach(_shown(host, port), exc) from exc


async def connect_first(
    *, direct: tuple[str, int] | None, relay: RelayAddress | None, token: str | None,
    relay_delay: float = RELAY_DELAY,
    on_route: Callable[[Route], None] = lambda route: None,
) -> tuple[Streams, Route]:
    """Connect directly or through the relay, whichever is up first (direct preferred).

    Args:
        direct: the other end's address, or None (relay only).
        relay: the relay, or None (direct only).
        token: the meeting token at the relay (needed with ``relay``).
        relay_delay: how long the direct attempt has alone before the relay is tried.
        on_route: told of each route as it is tried.

    Returns:
        The winner's reader and writer, and its route.

    Raises:
        NetworkError: no route was given, or every one failed (the message names each).
        RelayError: only the relay was tried and it failed.
    """
    attempts: dict[asyncio.Task[Streams], Route] = {}
    if direct is not None:
        route = Route(path="direct", remote=_shown(*direct))
        on_route(route)
        attempts[asyncio.ensure_future(_direct(*direct))] = route
    relay_route = None if relay is None else Route(path="relay", remote=f"relay {relay}")
    if not attempts and relay_route is None:
        raise NetworkError("nowhere to connect to: no address and no relay")

    def start_relay() -> None:
        assert relay is not None
        assert relay_route is not None
        assert token is not None
        on_route(relay_route)
        attempts[asyncio.ensure_future(open_relay(relay, token, CONNECTING_SIDE))] = \
            relay_route

    if not attempts:
        start_relay()
    errors: list[BaseException] = []
    winner: asyncio.Task[Streams] | None = None
    loop = asyncio.get_running_loop()
    relay_at = loop.time() + relay_delay
    try:
        while True:
            relay_waits = relay_route is not None and relay_route not in attempts.values()
            pending = {task for task in attempts if not task.done()}
            if relay_waits and (not pending or loop.time() >= relay_at):
                start_relay()  # the delay passed, or the direct attempt failed already
                continue
            if not pending:
                break
            done, _ = await asyncio.wait(pending, timeout=relay_at - loop.time()
                                         if relay_waits else None,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is None and winner is None:
                    winner = task
                elif error is not None:
                    errors.append(error)
            if winner is not None:
                return winner.result(), attempts[winner]
    finally:
        await _close_losers(attempts, winner)
    if len(errors) == 1:
        raise errors[0]
    raise NetworkError("; ".join(str(e) for e in errors)) from errors[-1]


async def _close_losers(attempts: dict[asyncio.Task[Streams], Route],
                        winner: asyncio.Task[Streams] | None) -> None:
    """Cancel the attempts still running; close any other that got through too."""
    for task in attempts:
        if not task.done():
            task.cancel()
    for task in attempts:
        with contextlib.suppress(BaseException):
            await task
    for task in attempts:
        if task is winner or task.cancelled() or task.exception() is not None:
            continue
        task.result()[1].close()
