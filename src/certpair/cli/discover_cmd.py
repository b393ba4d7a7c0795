"""``certpair discover``: list the devices currently offering pairing on the network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import emit_json
from certpair.cli.params import Finite
from certpair.cli.terminal import printable

if TYPE_CHECKING:
    from certpair.discovery import DiscoveredOfferer

__all__ = ["command", "interface_option", "offerer_json", "offerer_line"]


def offerer_json(offerer: DiscoveredOfferer) -> dict[str, Any]:
    """An offerer as one JSON object (the shape ``discover --json`` prints).

    Args:
        offerer: what discovery found.

    Returns:
        A JSON-ready dictionary.
    """
    return {"name": offerer.name, "instance": offerer.instance, "host": offerer.host,
            "port": offerer.port, "addresses": list(offerer.addresses),
            "mode": offerer.mode.value, "version": offerer.version,
            "fingerprint": offerer.fingerprint}


def offerer_line(offerer: DiscoveredOfferer) -> str:
    """An offerer as one line of text: instance, address, mode, fingerprint.

    Args:
        offerer: what discovery found.

    Returns:
        The line, without a newline.
    """
    from certpair.addresses import format_address  # noqa: PLC0415  # not at every start

    return (f"{printable(offerer.instance)}  {format_address(offerer.host, offerer.port)}  "
            f"{offerer.mode.value}  "
            f"{offerer.fingerprint or '(no fingerprint)'}")


interface_option = click.option(
    "--interface", "interfaces", multiple=True, metavar="ADDR",
    show_default="all interfaces",
    help="Use only the network interface with this IPv4 address (repeatable).",
)


@click.command("discover", short_help="List the devices offering pairing on the LAN.")
@click.option("--timeout", type=Finite(0.1, 600), default=3, show_default=True,
              metavar="SECONDS", help="Seconds to listen for offerers.")
@interface_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
def command(timeout: float, interfaces: tuple[str, ...], as_json: bool) -> None:
    """List the devices offering pairing on the local network right now.

    What is listed is only what devices claim about themselves; pairing still needs
    the secret, and a wrong offerer cannot pass its proof.

    \b
    Examples:
      certpair discover
      certpair discover --timeout 10 --json
    """
    import asyncio  # noqa: PLC0415  # keeps start-up fast

    from certpair.discovery import browse, check_interfaces  # noqa: PLC0415

    offerers = asyncio.run(browse(timeout=timeout, interfaces=check_interfaces(interfaces)))
    for offerer in offerers:
        if as_json:
            emit_json(offerer_json(offerer))
        else:
            click.echo(offerer_line(offerer))
    if not offerers and not as_json:
        click.echo("No device is offering pairing on the local network.")
