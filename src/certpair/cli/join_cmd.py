"""``certpair join``: pair with an offerer given by address, by URI, or found on the network."""

from __future__ import annotations

import click

from certpair.cli.discover_cmd import interface_option
from certpair.cli.params import Finite, relay_option
from certpair.relay import RelayAddress

__all__ = ["command"]


@click.command("join", short_help="Pair with the device showing a code.")
@click.argument("args", nargs=-1, metavar="[HOST[:PORT]] SECRET | URI")
@click.option("--timeout", type=Finite(0.1, 3600), default=30, show_default=True,
              metavar="SECONDS", help="Seconds to connect and pair.")
@click.option("--peer-name", metavar="NAME",
              help="Without an address: the offerer to pair with when several are offering.")
@click.option("--no-discovery", is_flag=True,
              help="Never look for the offerer on the network; an address is then required.")
@click.option("--discovery-timeout", type=Finite(0.1, 600), default=5, metavar="SECONDS",
              show_default=True, help="Seconds to look for the offerer on the network.")
@interface_option
@relay_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, args: tuple[str, ...], timeout: float, peer_name: str | None,
            no_discovery: bool, discovery_timeout: float, interfaces: tuple[str, ...],
            relay: RelayAddress | None, as_json: bool) -> None:
    """Pair with the device showing SECRET.

    The secret's format decides the mode: a digit code runs cpace, a long key hmac.
    A typo in the check character is caught here, before any connection.

    Without an address the offerer is looked for on the local network (mDNS/DNS-SD);
    if several devices are offering, they are listed and none is tried. A certpair://
    URI (from `pair --qr`) carries the address, the secret and the offerer's
    fingerprint; an offerer with another certificate is refused before any proof.
    A SECRET of - is read from standard input (asked for without echo on a terminal),
    so that it does not appear in the process list; `join -` also reads a URI there.

    A code from `pair --relay` has a meeting point in front (57218+4711-0815-3): with
    --relay (or CERTPAIR_RELAY, or the relay a URI names) the offerer is met there,
    after a short try of the direct address when one is given.

    \b
    Examples:
      certpair join 192.168.1.20 4711-0815-3
      certpair join 4711-0815-3
      certpair join 192.168.1.20:5000 -
      certpair join - < uri.txt
      certpair join --relay tcp:relay.example:4001 57218+4711-0815-3
    """
    from certpair.cli.join_run import run_join_command  # noqa: PLC0415  # fast start-up

    run_join_command(ctx, args=args, timeout=timeout, peer_name=peer_name,
                     no_discovery=no_discovery, discovery_timeout=discovery_timeout,
                     interfaces=interfaces, as_json=as_json, relay=relay)
