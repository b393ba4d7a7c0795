"""The work behind ``certpair pair``: run the offer, render its events, advertise it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from certpair.addresses import format_address, local_ipv4_addresses
from certpair.cli.context import (
    emit_json,
    failure_json,
    identity_of,
    iso_time,
    report_paired,
    store_of,
)
from certpair.cli.screen import Screen, clock_text
from certpair.codes import Mode, parse_secret
from certpair.discovery import Advertisement, DiscoveryError, best_local_address
from certpair.errors import CertpairError, PairingFailed
from certpair.identity import Identity
from certpair.net import (
    JoinerRefused,
    Listening,
    OfferEvent,
    PeerPaired,
    RelayStatus,
    run_offer,
)
from certpair.ports import PAIRING_PORT
from certpair.relay import RelayAddress
from certpair.store import TrustStore
from certpair.uri import format_uri, qr_terminal_text, valid_host, write_qr_png

__all__ = ["run_pair"]

_TERMINATED = 128 + signal.SIGTERM


def _join_hosts(listen_host: str) -> list[str]:
    """Where the other device can reach this offer: the listen address if specific,
    else this device's LAN addresses (routable ones before link-local ones)."""
    if listen_host not in {"", "0.0.0.0", "::"}:  # noqa: S104  # compared, not bound
        return [listen_host]
    found = [a for a, _ in local_ipv4_addresses()]
    found.sort(key=lambda a: ipaddress.IPv4Address(a).is_link_local)
    return found or [socket.gethostname() or "localhost"]


def _join_line(hosts: list[str], port: int, code: str, relay: str | None = None) -> str:
    """The command to type on the other device, with the real address in it."""
    def where(host: str) -> str:
        return format_address(host, None if port == PAIRING_PORT else port)

    option = "" if relay is None else f"--relay {relay} "
    line = f"On the other device: certpair join {option}{where(hosts[0])} {code}"
    if len(hosts) > 1:
        line += f"   (or instead of {where(hosts[0])}: {', '.join(map(where, hosts[1:4]))})"
    return line


def _uri_host(listen_host: str) -> str:
    """The host a scanning device should connect to."""
    if listen_host not in {"", "0.0.0.0", "::"}:  # noqa: S104  # compared, not bound
        return listen_host
    for candidate in (best_local_address(), socket.gethostname()):
        if candidate and valid_host(candidate):
            return candidate
    return "localhost"


@dataclass
class _Show:
    """Renders the offerer's events, and keeps the advertisement in step with them."""

    identity: Identity
    as_json: bool
    qr: bool
    qr_png: Path | None
    advertise: bool
    screen: Screen
    force: bool = False
    advertisement: Advertisement | None = None
    registering: asyncio.Task[str] | None = None
    ended: bool = False
    failure_reported: bool = False
    code: str = field(default="", repr=False)
    expires_at: float = 0.0
    codes_shown: int = 0
    mode: Mode = Mode.CPACE
    relay: RelayAddress | None = None
    relay_trouble: bool = False

    def on_event(self, event: OfferEvent) -> None:
        if isinstance(event, Listening):
            self.listening(event)
            if self.advertise and self.advertisement is None:
                self.start_advertising(event)
            return
        if isinstance(event, PeerPaired):
            self.ended = True
            if not self.as_json:
                self.screen.close()
            report_paired(event.peer, as_json=self.as_json,
                          path=None if self.relay is None else event.path)
        elif isinstance(event, RelayStatus):
            self.relay_status(event)
        elif isinstance(event, JoinerRefused):
            # Refused before any proof: the code shown is still valid.
            if self.as_json:
                emit_json({"event": "refused", "reason": event.reason, "remote": event.remote})
            else:
                self.screen.echo(f"Refused a joiner from {event.remote}: {event.reason}; "
                                 "the code is still valid.", err=True)
        elif self.as_json:
            # A burned secret is a failed pairing (a fresh `listening` may follow); a
            # wrong hmac key with tries left is only a rejected attempt.
            self.failure_reported = event.burned
            emit_json({"event": "failed" if event.burned else "rejected",
                       "reason": "pairing failed: wrong secret or tampered connection",
                       "remote": event.remote, "burned": event.burned,
                       "attempts_left": event.attempts_left})
        elif event.burned and event.attempts_left == 0 and self.code:
            what = "code" if self.mode is Mode.CPACE else "key"
            self.screen.echo(f"Wrong {what} tried from {event.remote}: {what} {self.code} is "
                             "burned and can no longer pair.", err=True)
        else:
            tail = "the secret is burned" if event.burned else f"{event.attempts_left} tries left"
            self.screen.echo(f"A wrong secret was tried from {event.remote}; {tail}.", err=True)

    def relay_status(self, event: RelayStatus) -> None:
        """The wait at the relay: said when it starts, and when it fails (once per
        failure in text; every retry in JSON)."""
        if self.as_json:
            line: dict[str, object] = {"event": "relay", "relay": event.relay,
                                       "status": "waiting" if event.waiting else "retrying"}
            if not event.waiting:
                line.update(reason=event.reason, retry_in=event.retry_in)
            emit_json(line)
        elif event.waiting:
            self.relay_trouble = False
            self.screen.echo(f"Also waiting at the relay {event.relay}.")
        elif not self.relay_trouble:
            self.relay_trouble = True
            self.screen.echo(f"Warning: {event.reason}; trying again (the direct address "
                             "still works).", err=True)

    def listening(self, event: Listening) -> None:
        uri = None
        if self.qr or self.qr_png is not None:
            uri = format_uri(host=_uri_host(event.host), port=event.port,
                             secret=parse_secret(event.code), fingerprint=self.identity.fingerprint,
                             relay=self.relay)
        if self.qr_png is not None and uri is not None:
            # A later code replaces this run's own image; the first write replaces a
            # file only under --force.
            write_qr_png(uri, self.qr_png, replace=self.force)
            self.force = True
        if self.as_json:
            line = {"event": "listening", "host": event.host, "port": event.port,
                    "mode": event.mode.value, "code": event.code,
                    "expires_at": iso_time(event.expires_at)}
            if event.relay is not None:
                line.update(relay=event.relay, nameplate=event.nameplate)
            if uri is not None:
                line["uri"] = uri
            emit_json(line)
            return
        self.code, self.expires_at, self.mode = event.code, event.expires_at, event.mode
        self.codes_shown += 1
        what = "Pairing code" if event.mode is Mode.CPACE else "Pairing key"
        if self.codes_shown > 1:
            what = f"New {what.lower()}"
        # On a terminal the countdown is the live status line; elsewhere it is said once.
        expiry = ("" if self.screen.live else
                  f"     (expires in {clock_text(event.expires_at - time.time())})")
        if self.qr and uri is not None:
            # The QR code first, then the code and the command under it: what scrolls
            # off a small terminal is the top of the code, never the code line.
            drawing = qr_terminal_text(uri)
            self.screen.echo(drawing, nl=False)
            rows, lines = shutil.get_terminal_size().lines, drawing.count("\n") + 3
            if self.screen.live and rows < lines:
                self.screen.echo(f"The terminal is too small for the QR code ({rows} lines; "
                                 f"it needs {lines}): enlarge it, or use --qr-png FILE.",
                                 err=True)
        self.screen.echo(f"{what}: {event.code}{expiry}   listening on "
                         f"{format_address(event.host, event.port)}")
        self.screen.echo(_join_line(_join_hosts(event.host), event.port, event.code, event.relay))
        if self.qr_png is not None:
            self.screen.echo(f"QR code written to {self.qr_png}")
        self.tick()

    def tick(self) -> None:
        """Redraw the countdown (a terminal only)."""
        if self.expires_at and not self.ended:
            left = clock_text(self.expires_at - time.time())
            self.screen.status(f"Expires in {left}, waiting for the other device "
                               "(Ctrl-C stops)")

    async def count_down(self) -> None:
        """Redraw the countdown every second until the run ends."""
        while not self.ended:
            self.tick()
            # Wake just after the next whole second of the countdown.
            await asyncio.sleep(((self.expires_at - time.time()) % 1.0) + 0.01)

    def start_advertising(self, event: Listening) -> None:
        self.advertisement = Advertisement(
            name=self.identity.name, mode=event.mode, port=event.port,
            fingerprint=self.identity.fingerprint, listen_host=event.host,
        )
        self.registering = asyncio.get_running_loop().create_task(self.advertisement.start())
        self.registering.add_done_callback(self.advertised)

    def advertised(self, task: asyncio.Task[str]) -> None:
        if task.cancelled() or self.ended:
            return
        error = task.exception()
        if error is not None:
            reason = str(error) if isinstance(error, DiscoveryError) else repr(error)
            self.screen.echo(f"Warning: not discoverable on the local network: {reason}",
                             err=True)
        elif self.as_json:
            emit_json({"event": "advertised", "name": task.result(),
                       "where": self.advertisement.where() if self.advertisement else ""})
        else:
            where = self.advertisement.where() if self.advertisement else "here"
            self.screen.echo(f"Discoverable as {task.result()!r} on {where}.")

    async def stop_advertising(self) -> None:
        self.ended = True
        if self.registering is not None:
            self.registering.cancel()
            with contextlib.suppress(BaseException):
                await self.registering
        if self.advertisement is not None:
            await self.advertisement.close()


async def _offer(show: _Show, *, identity: Identity, store: TrustStore, mode: Mode, host: str,
                 port: int, ttl: float, timeout: float | None, once: bool, digits: int,
                 bits: int, relay: RelayAddress | None) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    if main is not None:
        # SIGTERM would otherwise end the process without the mDNS goodbye.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, main.cancel)
    ticker = loop.create_task(show.count_down()) if show.screen.live else None
    try:
        await run_offer(identity=identity, store=store, mode=mode, host=host, port=port, ttl=ttl,
                        timeout=timeout, once=once, digits=digits, bits=bits,
                        on_event=show.on_event, relay=relay)
    finally:
        if ticker is not None:
            ticker.cancel()
        show.screen.close()
        await show.stop_advertising()


def run_pair(
    ctx: click.Context, *, mode: str, host: str, port: int, ttl: float, timeout: float | None,
    digits: int, bits: int, once: bool, qr: bool, qr_png: Path | None, force: bool,
    no_advertise: bool, as_json: bool, relay: RelayAddress | None = None,
) -> None:
    """Run ``certpair pair`` with parsed options (see its help)."""
    identity = identity_of(ctx)
    store = store_of(ctx)
    show = _Show(identity=identity, as_json=as_json, qr=qr, qr_png=qr_png, force=force,
                 advertise=not no_advertise, screen=Screen.for_stdout(as_json=as_json),
                 relay=relay)
    try:
        asyncio.run(_offer(show, identity=identity, store=store, mode=Mode(mode), host=host,
                           port=port, ttl=ttl, timeout=timeout, once=once, digits=digits,
                           bits=bits, relay=relay))
    except CertpairError as exc:
        if as_json and not (isinstance(exc, PairingFailed) and show.failure_reported):
            emit_json(failure_json(exc))
        raise
    except asyncio.CancelledError:
        if as_json:
            emit_json({"event": "failed", "reason": "terminated"})
        click.echo("Terminated.", err=True)
        ctx.exit(_TERMINATED)
