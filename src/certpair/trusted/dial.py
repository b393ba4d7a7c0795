"""Reaching a paired device at one of several addresses: race them, then let TLS decide.

:func:`dial` starts TCP connections to the candidates in the order given
(:func:`certpair.reach.candidates` decides it), each a short delay after the previous
one unless that one failed first (RFC 8305 "happy eyeballs", done by
``aiohappyeyeballs``, the library aiohttp uses). The first connection that completes
wins and the others are closed. A ``discover`` callback (DNS-SD) runs at the same time
in a thread; the addresses it finds that were not candidates already are raced as
soon as they come. The result names the address that won.

Without a lookup, and when the first candidate is an IP address, that first attempt is
made without an event loop: RFC 8305 gives it the whole delay alone, and it answers
within it nearly always (loopback, a LAN, the address that won last time). Only when
it has not answered by then, or failed, does the race start (the attempt under way
takes part in it). An event loop per connection cost ~0.8 ms of CPU and two threads
(asyncio resolves addresses in a thread pool, even numeric ones), for a ``tunnel
connect`` connection about a third of its CPU (docs/PERFORMANCE.md).

An address is only a hint: :func:`reach` hands the winner to an ``attempt`` (the TLS
handshake, pinned to the peer, and the check of who answered); when another device
answered there (:class:`OtherDevice`), the race goes on with the addresses left, the
announced ones included (a lookup the first round cut short runs again), and the
result lists the addresses passed over and why. Nothing but the TLS check decides who
answered. :func:`certpair.trusted.routes.connect_peer` is that for a blocking ``ssl``
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aiohappyeyeballs

from certpair.errors import CertpairError, Expired, NetworkError
from certpair.reach import DIRECT, Candidate
from certpair.store import Peer
from certpair.trusted.contexts import NotPaired

if TYPE_CHECKING:
    pass

__all__ = [
    "HAPPY_EYEBALLS_DELAY", "Discover", "OtherDevice", "Reached", "dial", "reach",
    "same_device",
]

# RFC 8305 §5 recommends 250 ms between connection attempts.
HAPPY_EYEBALLS_DELAY = 0.25

# Called in a thread with an event set when the answer is no longer needed; returns
# the candidates it found (it should return early once the event is set).
Discover = Callable[[threading.Event], list[Candidate]]


T = TypeVar("T")


class OtherDevice(NotPaired):
    """Another device (or no certpair device) answered at a candidate address: the
    address was a wrong hint, and the race goes on (:func:`reach`). The message names
    the address and what answered there."""


@dataclass(frozen=True, kw_only=True)
class Reached:
    """A connected socket and the candidate it reached; ``discovered`` is what the
    DNS-SD lookup returned when it finished before the race did (None: it did not)."""

    sock: socket.socket
    candidate: Candidate
    discovered: tuple[Candidate, ...] | None = None


@dataclass
class _Lookup:
    found: list[Candidate] | None = None
    skip: set[tuple[str, str, int]] = field(default_factory=set)


def _key(candidate: Candidate) -> tuple[str, str, int]:
    return (candidate.kind, candidate.host, candidate.port)


def same_device(found: Peer, peer: Peer) -> bool:
    """Whether ``found`` (a connection's peer, as stored now) is the device ``peer`` was,
    under the same certificate or the one it rotated to (its device id)."""
    if found.device_id and peer.device_id:
        return found.device_id == peer.device_id
    return found.fingerprint == peer.fingerprint


async def _race(candidates: Sequence[Candidate], delay: float) -> Reached:
    loop = asyncio.get_running_loop()
    infos: list[tuple[int, int, int, str, tuple[object, ...]]] = []
    owner: dict[int, Candidate] = {}
    failures: list[str] = []
    for candidate in candidates:
        try:
            found = await loop.getaddrinfo(candidate.host, candidate.port,
                                           type=socket.SOCK_STREAM)
        except OSError as exc:
            failures.append(f"{candidate}: {exc.strerror or exc}")
            continue
        for info in found:
            owner[len(infos)] = candidate
            infos.append(info)
    if not infos:
        raise OSError("; ".join(failures) or "no address")
    made: dict[int, int] = {}  # socket fileno -> index in infos

    def socket_factory(info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
        sock = socket.socket(info[0], info[1], info[2])
        made[sock.fileno()] = infos.index(info)
        return sock

    sock = await aiohappyeyeballs.start_connection(
        infos, happy_eyeballs_delay=delay, socket_factory=socket_factory)
    return Reached(sock=sock, candidate=owner[made[sock.fileno()]])


def _start_alone(candidate: Candidate) -> Reached | None:
    """A non-blocking connection attempt to ``candidate`` if it is an IP address (a
    name is resolved in the race), else None; ``sock`` may still be connecting."""
    if candidate.kind != DIRECT:
        return None
    found = _numeric(candidate.host, candidate.port)
    if found is None:
        return None
    family, kind, proto, address = found
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    if sock.connect_ex(address) not in (0, errno.EINPROGRESS):
        sock.close()  # failed at once: the race tries it again and says why
        return None
    return Reached(sock=sock, candidate=candidate)


def _numeric(host: str, port: int) -> tuple[int, int, int, Any] | None:
    """``host:port``'s socket address if ``host`` is an IP address, else None; looked up
    once per address (a tunnel dials the same one for each connection), except an IPv6
    address with a zone: its interface's index may change."""
    if "%" in host:
        return _numeric_now(host, port)
    return _numeric_once(host, port)


def _numeric_now(host: str, port: int) -> tuple[int, int, int, Any] | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return None
    family, kind, proto, _, address = infos[0]
    return int(family), int(kind), proto, address


_numeric_once = functools.lru_cache(maxsize=256)(_numeric_now)


def _answered(attempt: Reached, wait: float) -> bool | None:
    """Whether an attempt connected within ``wait`` seconds (None: still connecting)."""
    poller = select.poll()
    poller.register(attempt.sock, select.POLLOUT)
    if not poller.poll(max(0.0, wait) * 1000):
        return None
    return attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


async def _under_way(attempt: Reached) -> Reached:
    """An attempt started before the race, as one of its contenders."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = attempt.sock.fileno()

    def writable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, writable)
    try:
        await ready
    except asyncio.CancelledError:
        attempt.sock.close()
        raise
    finally:
        loop.remove_writer(fd)
    error = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        attempt.sock.close()
        raise OSError(error, f"{attempt.candidate}: {os.strerror(error)}")
    return attempt


async def _discovered(discover: Discover, stop: threading.Event,
                      known: Sequence[Candidate], delay: float,
                      lookup: _Lookup) -> Reached | None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[list[Candidate]] = loop.create_future()

    def deliver(found: list[Candidate]) -> None:
        if not answer.done():
            answer.set_result(found)

    def browse() -> None:
        try:
            found = discover(stop)
        except Exception:  # a failed browse is only no hint
            found = []
        with contextlib.suppress(RuntimeError):  # the loop ended: nobody waits any more
            loop.call_soon_threadsafe(deliver, found)

    threading.Thread(target=browse, name="certpair-discover", daemon=True).start()
    found = await answer
    if not stop.is_set():  # a whole answer, not one cut short
        lookup.found = found
    seen = {_key(c) for c in known} | lookup.skip
    fresh = [c for c in found if _key(c) not in seen]
    if not fresh:
        return None
    return await _race(fresh, delay)


async def _first(candidates: Sequence[Candidate], discover: Discover | None,
                 delay: float, errors: list[str], lookup: _Lookup,
                 under_way: Reached | None = None) -> Reached | None:
    stop = threading.Event()
    tasks: set[asyncio.Task[Reached | None]] = set()
    if under_way is not None:  # the first candidate's attempt, started before the race
        tasks.add(asyncio.create_task(_under_way(under_way)))
        candidates = candidates[1:]
    if candidates:
        tasks.add(asyncio.create_task(_race(candidates, delay)))
    if discover is not None:
        tasks.add(asyncio.create_task(_discovered(discover, stop, candidates, delay,
                                                  lookup)))
    won: Reached | None = None
    try:
        while tasks and won is None:
            done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    exc = task.exception()
                    errors.append(str(exc.strerror or exc) if isinstance(exc, OSError)
                                  else str(exc))
                elif (result := task.result()) is not None:
                    if won is None:
                        won = result
                    else:
                        result.sock.close()
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                late = await task
                if late is not None:
                    late.sock.close()
    return won


def dial(candidates: Sequence[Candidate], *, timeout: float, what: str,
         discover: Discover | None = None, delay: float = HAPPY_EYEBALLS_DELAY,
         skip: Collection[Candidate] = ()) -> Reached:
    """Connect (TCP) to the first candidate that answers; blocking.

    Args:
        candidates: the addresses, in the order to start them.
        timeout: seconds for the whole race.
        what: how errors name the device (``alpha``).
        discover: also race what this finds (see :data:`Discover`), as it comes.
        delay: seconds between the starts of two attempts (RFC 8305).
        skip: addresses ``discover`` may return that are not to be raced (tried already).

    Returns:
        The connected socket (blocking, with ``timeout`` set), its candidate, and what
        ``discover`` returned if it finished first.

    Raises:
        Expired: nothing answered within ``timeout``.
        NetworkError: every attempt failed (each address and its reason are named).
    """
    errors: list[str] = []
    lookup = _Lookup(skip={_key(c) for c in skip})
    tried = ", ".join(str(c) for c in candidates) or "no known address"
    start = time.monotonic()
    attempt = _start_alone(candidates[0]) if candidates and discover is None else None
    won: Reached | None = None
    if attempt is not None:
        answered = _answered(attempt, min(delay, timeout))
        if answered:
            won = attempt
        elif answered is False or time.monotonic() - start >= timeout:
            attempt.sock.close()  # refused (the race tries again, for its reason) or late
            attempt = None
    try:
        if won is None:
            won = asyncio.run(asyncio.wait_for(
                _first(candidates, discover, delay, errors, lookup, attempt),
                max(0.0, timeout - (time.monotonic() - start))))
    except TimeoutError:
        raise Expired(f"cannot reach {what} at {tried}: no answer within {timeout:g} s"
                      ) from None
    if won is None:
        found = "" if discover is None else "; not announced on the local network either"
        if not candidates:
            raise NetworkError(f"no address is known for {what}{found}: give HOST[:PORT] "
                               "once, or run its serve on this network")
        reasons = f" ({'; '.join(errors)})" if errors else ""
        raise NetworkError(f"cannot reach {what} at {tried}{reasons}{found}")
    won.sock.setblocking(True)
    won.sock.settimeout(timeout)
    with contextlib.suppress(OSError):
        won.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if lookup.found is None:
        return won
    return Reached(sock=won.sock, candidate=won.candidate, discovered=tuple(lookup.found))


def reach(what: str, candidates: Sequence[Candidate], attempt: Callable[[Reached], T], *,
          timeout: float, discover: Discover | None = None,
          delay: float = HAPPY_EYEBALLS_DELAY, passed: list[str] | None = None) -> T:
    """Race ``candidates`` (and what ``discover`` finds) and hand the winner to
    ``attempt``; when it raises :class:`OtherDevice`, race the addresses left.

    Args:
        what: how errors name the device (``alpha``).
        candidates: its addresses, in order.
        attempt: the handshake and check on a connected socket (it closes the socket
            when it raises); its result is returned.
        timeout: seconds for everything (each round gets what is left).
        discover: the DNS-SD lookup raced with the first round; when the first round
            cut it short and another device answered, it runs again with the next.
        delay: seconds between the starts of two attempts (RFC 8305).
        passed: receives one line per address passed over (what answered there
            instead), in order.

    Returns:
        What ``attempt`` returned.

    Raises:
        NotPaired: only other devices answered (each address and what it is are named).
        Expired, NetworkError: as for :func:`dial` (when no other device answered).
        Whatever ``attempt`` raises besides :class:`OtherDevice`.
    """
    end = time.monotonic() + timeout
    left = list(candidates)
    tried: list[Candidate] = []
    passed = [] if passed is None else passed
    while True:
        try:
            reached = dial(left, timeout=max(0.1, end - time.monotonic()), what=what,
                           discover=discover, delay=delay, skip=tried)
        except CertpairError as exc:
            if not passed:
                raise
            raise NotPaired(f"{'; '.join(passed)}; {what} answered nowhere else ({exc})"
                            ) from exc
        tried.append(reached.candidate)
        if reached.discovered is not None:  # the lookup is done: its addresses join
            discover = None
            left += [c for c in reached.discovered if c not in left]
        left = [c for c in left if _key(c) not in {_key(t) for t in tried}]
        try:
            return attempt(reached)
        except OtherDevice as exc:
            passed.append(str(exc))
        if not left and discover is None:
            raise NotPaired("; ".join(passed))
