"""``certpair pair``: show a secret and wait for a joiner."""

from __future__ import annotations

import asyncio
import time

import click

from certpair.cli.context import emit_json, identity_of, iso_time, store_of
from certpair.codes import (
    CPACE_DEFAULT_DIGITS,
    CPACE_MAX_DIGITS,
    CPACE_MIN_DIGITS,
    HMAC_DEFAULT_BITS,
    HMAC_MIN_BITS,
    Mode,
)
from certpair.errors import CertpairError
from certpair.net.pairing import DEFAULT_PORT, Listening, OfferEvent, PeerPaired, run_offer

__all__ = ["command"]


def _render(event: OfferEvent, as_json: bool) -> None:
    if isinstance(event, Listening):
        if as_json:
            emit_json({"event": "listening", "host": event.host, "port": event.port,
                       "mode": event.mode.value, "code": event.code,
                       "expires_at": iso_time(event.expires_at)})
            return
        left = max(0, int(event.expires_at - time.time()))
        what = "Pairing code" if event.mode is Mode.CPACE else "Pairing key"
        click.echo(f"{what}: {event.code}     (expires in {left // 60}:{left % 60:02d})   "
                   f"listening on {event.host}:{event.port}")
    elif isinstance(event, PeerPaired):
        peer = event.peer
        if as_json:
            emit_json({"event": "paired",
                       "peer": {"name": peer.name, "fingerprint": peer.fingerprint}})
        else:
            click.echo(f"Paired with {peer.name}  {peer.fingerprint}")
    elif as_json:
        emit_json({"event": "rejected", "reason": event.reason.text, "remote": event.remote,
                   "burned": event.burned, "attempts_left": event.attempts_left})
    else:
        tail = "the secret is burned" if event.burned else f"{event.attempts_left} tries left"
        click.echo(f"A wrong secret was tried from {event.remote}; {tail}.", err=True)


@click.command("pair")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.CPACE.value,
              show_default=True, help="cpace: short code; hmac: the seed's scheme, long key.")
@click.option("--listen", "host", default="0.0.0.0", show_default=True,  # noqa: S104  # the joiner is another device
              help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="TCP port; 0 picks a free one.")
@click.option("--ttl", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds each secret stays valid.")
@click.option("--timeout", type=click.FloatRange(min=1), default=None,
              help="Overall seconds to wait (default: until a secret expires unused).")
@click.option("--digits", type=click.IntRange(CPACE_MIN_DIGITS, CPACE_MAX_DIGITS),
              default=CPACE_DEFAULT_DIGITS, show_default=True, help="cpace code length.")
@click.option("--bits", type=click.IntRange(min=HMAC_MIN_BITS), default=HMAC_DEFAULT_BITS,
              show_default=True, help="hmac key strength.")
@click.option("--once", is_flag=True, help="Stop at the first failed proof (exit 1).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON events, one per line.")
@click.pass_context
def command(
    ctx: click.Context, mode: str, host: str, port: int, ttl: float, timeout: float | None,
    digits: int, bits: int, once: bool, as_json: bool,
) -> None:
    """Show a pairing secret and wait for the device that types it."""
    identity = identity_of(ctx)
    store = store_of(ctx)
    try:
        asyncio.run(run_offer(
            identity=identity, store=store, mode=Mode(mode), host=host, port=port, ttl=ttl,
            timeout=timeout, once=once, digits=digits, bits=bits,
            on_event=lambda event: _render(event, as_json),
        ))
    except CertpairError as exc:
        if as_json:
            emit_json({"event": "failed", "reason": str(exc)})
        raise
