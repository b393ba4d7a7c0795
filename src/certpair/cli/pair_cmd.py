"""``certpair pair``: show a secret (and its QR code), advertise it, wait for a joiner."""

from __future__ import annotations

from pathlib import Path

import click

from certpair.cli.params import Finite, relay_option
from certpair.codes import (
    CPACE_DEFAULT_DIGITS,
    CPACE_MAX_DIGITS,
    CPACE_MIN_DIGITS,
    HMAC_DEFAULT_BITS,
    HMAC_MIN_BITS,
    Mode,
)
from certpair.errors import BadInput
from certpair.ports import PAIRING_PORT
from certpair.relay import RelayAddress

__all__ = ["MAX_SECONDS", "command"]

MAX_SECONDS = 86400
# HMAC-SHA256 offers at most 256 bits of strength; a longer key only adds typing.
HMAC_MAX_BITS = 256


@click.command("pair", short_help="Show a pairing code and wait for the other device.")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.CPACE.value,
              show_default=True,
              help="cpace: a short code (PAKE); hmac: the seed's scheme, a long key.")
@click.option("--listen", "host", default="0.0.0.0", show_default=True, metavar="ADDR",  # noqa: S104  # the joiner is another device
              help="Address to listen on (and to advertise on, if specific).")
@click.option("--port", type=click.IntRange(0, 65535), default=PAIRING_PORT, show_default=True,
              metavar="PORT", help="TCP port; 0 picks a free one.")
@click.option("--ttl", type=Finite(1, MAX_SECONDS), default=300, show_default=True,
              metavar="SECONDS", help="Seconds each secret stays valid (at most a day).")
@click.option("--timeout", type=Finite(1, MAX_SECONDS), default=None, metavar="SECONDS",
              show_default="until the secret expires unused",
              help="Overall seconds to wait; not longer than --ttl.")
@click.option("--digits", type=click.IntRange(CPACE_MIN_DIGITS, CPACE_MAX_DIGITS),
              default=CPACE_DEFAULT_DIGITS, show_default=True, metavar="N",
              help="cpace: random digits in the code (a check digit is added).")
@click.option("--bits", type=click.IntRange(HMAC_MIN_BITS, HMAC_MAX_BITS),
              default=HMAC_DEFAULT_BITS, show_default=True, metavar="N",
              help="hmac: bits of randomness in the key (at least what `certpair advise "
                   "--mode hmac --ttl TTL` asks for).")
@click.option("--once", is_flag=True,
              help="Stop at the first failed proof (exit 1) instead of showing a new code.")
@click.option("--qr", is_flag=True,
              help="Show a QR code of the certpair:// URI (host, port, secret, fingerprint).")
@click.option("--qr-png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="Write the QR code to FILE as a PNG image (created 0600; it holds the "
                   "secret). An existing FILE is refused unless --force.")
@click.option("--force", is_flag=True, help="Let --qr-png replace an existing FILE.")
@click.option("--no-advertise", is_flag=True,
              help="Do not announce this offer on the local network (mDNS/DNS-SD).")
@relay_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(
    ctx: click.Context, mode: str, host: str, port: int, ttl: float, timeout: float | None,
    digits: int, bits: int, once: bool, qr: bool, qr_png: Path | None, force: bool,
    no_advertise: bool, relay: RelayAddress | None, as_json: bool,
) -> None:
    """Show a pairing secret and wait for the device that types or scans it.

    While a secret is active the offer is advertised as _certpair._tcp on the local
    network (name, mode, fingerprint; never the secret), so that `certpair join SECRET`
    finds it without an address. A wrong code burns it and a new one is shown (at
    most 10 per run).

    With --relay (or CERTPAIR_RELAY) the offer also waits at that magic-wormhole
    transit relay, and each code gets a public meeting point in front of it
    (57218+4711-0815-3); the other device joins with the same relay. The relay only
    carries encrypted bytes: it cannot read them, nor pair, nor learn the code.

    \b
    Examples:
      certpair pair
      certpair pair --qr --ttl 120
      certpair pair --mode hmac --listen 192.168.1.20 --port 0
      certpair pair --relay tcp:relay.example:4001
    """
    if timeout is not None and timeout > ttl:
        # The secret expires after --ttl and the run ends with it: a longer --timeout
        # would be silently cut short, so it is refused rather than ignored.
        raise BadInput(f"--timeout {timeout:g} is longer than --ttl {ttl:g}: the code "
                       "expires after --ttl and pair stops then; raise --ttl instead")
    if mode == Mode.HMAC.value:
        _check_hmac_bits(bits, ttl)
    if qr_png is not None and not force and (qr_png.exists() or qr_png.is_symlink()):
        # The image holds the live secret: never write through someone else's file.
        raise BadInput(f"the QR image {qr_png} already exists; --force replaces it")
    from certpair.cli.pair_run import run_pair  # noqa: PLC0415  # keeps start-up fast

    run_pair(ctx, mode=mode, host=host, port=port, ttl=ttl, timeout=timeout, digits=digits,
             bits=bits, once=once, qr=qr, qr_png=qr_png, force=force, no_advertise=no_advertise,
             as_json=as_json, relay=relay)


def _check_hmac_bits(bits: int, ttl: float) -> None:
    """An hmac key must hold out against offline guessing for its whole lifetime
    (docs/SECURITY.md): its length follows --ttl by `certpair advise`'s formula."""
    import math  # noqa: PLC0415  # only hmac mode needs it

    from certpair.advice import DEFAULT_RISK, advise  # noqa: PLC0415  # keeps start-up fast

    needed = max(HMAC_MIN_BITS, math.ceil(advise(mode=Mode.HMAC, risk=DEFAULT_RISK,
                                                 ttl=ttl).bits))
    if bits < needed:
        raise BadInput(f"--bits {bits} is too few for --ttl {ttl:g}: an hmac key can be "
                       f"guessed offline until it expires, so it needs at least {needed} "
                       f"bits (certpair advise --mode hmac --ttl {ttl:g})")
