"""The work behind ``certpair join``: find the offerer if needed, pair, render."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass

import click

from certpair.addresses import format_address
from certpair.cli.context import emit_json, failure_json, identity_of, report_paired, store_of
from certpair.cli.discover_cmd import offerer_json, offerer_line
from certpair.cli.params import HostPort, SecretParam, read_stdin_secret
from certpair.cli.terminal import printable
from certpair.codes import Mode, Secret, WrongCheckCharacter, parse_secret
from certpair.discovery import (
    AmbiguousOfferers,
    DiscoveredOfferer,
    browse,
    check_interfaces,
    choose_offerer,
)
from certpair.errors import BadInput, CertpairError, PairingFailed
from certpair.net import run_join
from certpair.net.join import JoinStage, Route
from certpair.ports import PAIRING_PORT
from certpair.relay import RELAY_ENV, RelayAddress
from certpair.uri import looks_like_uri, parse_uri

__all__ = ["run_join_command"]

# Once one offerer has answered, how much longer to listen for others: a second one
# means the user must choose, so it must have had a fair chance to be heard.
_SETTLE = 1.5
USAGE = "join HOST[:PORT] SECRET, join SECRET (finds the offerer) or join 'certpair://…'"


@dataclass(frozen=True, kw_only=True)
class _Target:
    secret: Secret
    address: tuple[str, int] | None
    fingerprint: str | None
    relay: RelayAddress | None = None


def _looks_like_address(text: str) -> bool:
    """Whether a word that is not a secret was probably meant as the offerer's address:
    it has a dot or a colon, or letters and too few characters to be an hmac key."""
    if any(ch in text for ch in ".:["):
        return True
    compact = text.replace("-", "")
    return any(ch.isalpha() for ch in compact) and len(compact) <= 13


def _is_secret(text: str) -> bool:
    """Whether ``text`` has a secret's shape (a typo in its check character included)."""
    try:
        parse_secret(text)
    except WrongCheckCharacter:
        return True
    except BadInput:
        return False
    return True


def _is_port(arg: str) -> bool:
    return arg.isascii() and arg.isdigit() and len(arg) <= 5 and 0 < int(arg) <= 65535


def _check_shape(args: tuple[str, ...]) -> None:
    """Catch the usual mistakes with a hint; never repeat the secret in the message."""
    for arg in args:
        if arg.lower().startswith(("http://", "https://")):
            raise BadInput("an http:// address is not a certpair address: use the "
                           "certpair://… URI that `certpair pair --qr` shows, or join HOST CODE")
    if not args:
        raise BadInput(f"missing the pairing code: {USAGE}")
    if any(looks_like_uri(arg) for arg in args):
        return
    if len(args) == 1 and not _is_secret(args[0]) and _looks_like_address(args[0]):
        raise BadInput(f"missing the pairing code: join {args[0]} CODE, with the code "
                       "the other device shows")
    if (len(args) == 2 and _is_secret(args[0]) and not _is_secret(args[1])
            and _looks_like_address(args[1])):
        raise BadInput(f"the address comes first: join {args[1]} CODE")
    if (len(args) == 3 and _looks_like_address(args[0]) and _is_port(args[1])
            and _is_secret(args[2])):
        host = f"[{args[0]}]" if ":" in args[0] else args[0]
        raise BadInput(f"the port goes with the address, after a colon: join "
                       f"{host}:{args[1]} CODE")
    if len(args) >= 3:
        spaced = args[1:] if not _is_secret("".join(args)) else args
        if _is_secret("".join(spaced)):
            host = "" if spaced is args else f"{args[0]} "
            raise BadInput("the code was split into several words: quote the code or drop "
                           f"the spaces, e.g. join {host}4711-0815-3")


def _target(args: tuple[str, ...], ctx: click.Context) -> _Target:
    if args and args[-1] == "-":
        # What standard input holds goes through the same checks as an argument: a
        # certpair:// URI there (kept out of the process list) pins its fingerprint too.
        args = (*args[:-1], read_stdin_secret())
    _check_shape(args)
    if len(args) == 1 and looks_like_uri(args[0]):
        uri = parse_uri(args[0])
        return _Target(secret=uri.secret, address=(uri.host, uri.port),
                       fingerprint=uri.fingerprint, relay=uri.relay)
    if any(looks_like_uri(arg) for arg in args):
        raise BadInput("a certpair:// URI already holds the address and the secret; "
                       "give it alone")
    if len(args) == 1:
        return _Target(secret=SecretParam().convert(args[0], None, ctx), address=None,
                       fingerprint=None)
    if len(args) == 2:
        address = HostPort(PAIRING_PORT).convert(args[0], None, ctx)
        secret = SecretParam().convert(args[1], None, ctx)
        return _Target(secret=secret, address=address, fingerprint=None)
    raise BadInput(f"give the offerer and the secret: {USAGE}")


def _pick(error: AmbiguousOfferers, as_json: bool) -> DiscoveredOfferer:
    """List the candidates; ask which one on a terminal, else refuse."""
    if as_json:
        emit_json({"event": "offerers", "offerers": [offerer_json(o) for o in error.candidates]})
        raise error
    click.echo("Several devices are offering pairing:", err=True)
    for number, offerer in enumerate(error.candidates, 1):
        click.echo(f"  {number}) {offerer_line(offerer)}", err=True)
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise error
    number = click.prompt("Pair with which one? (number, Ctrl-C to stop)", err=True,
                          type=click.IntRange(1, len(error.candidates)))
    return error.candidates[number - 1]


def _say(as_json: bool, text: str) -> None:
    """A progress line on stderr, for a person at a terminal: scripts reading stderr
    see only results and errors, and JSON output has its own events."""
    if not as_json and sys.stderr.isatty():
        click.echo(text, err=True)


def _progress(as_json: bool, remote: str, secret: Secret) -> Callable[[JoinStage], None]:
    proof = "code" if secret.mode is Mode.CPACE else "key"
    lines = {JoinStage.CONNECTING: f"Connecting to {remote}…",
             JoinStage.PROVING: f"Proving the {proof}…"}

    def show(stage: JoinStage) -> None:
        if stage in lines:
            _say(as_json, lines[stage])

    return show


def _explain(error: PairingFailed, secret: Secret) -> PairingFailed:
    """Say what a failed proof means for the user's next step."""
    if not error.wrong_secret:  # the library says so in a field, not in its wording
        return error
    if secret.mode is Mode.CPACE:
        return PairingFailed("pairing failed: wrong code (or a tampered connection); that "
                             "code is now burned and the other device shows a new one: "
                             "join again with the new code")
    return PairingFailed("pairing failed: wrong key (or a tampered connection); the other "
                         "device allows 3 tries per key, then shows a new one")


def _discover(target: _Target, *, peer_name: str | None, timeout: float,
              interfaces: list[str], as_json: bool) -> DiscoveredOfferer:
    _say(as_json, "Looking for offerers on the local network…")
    offerers = asyncio.run(browse(timeout=timeout, settle=_SETTLE, interfaces=interfaces))
    try:
        chosen = choose_offerer(offerers, mode=target.secret.mode, peer_name=peer_name,
                                waited=timeout)
    except AmbiguousOfferers as error:
        chosen = _pick(error, as_json)
    if as_json:
        emit_json({"event": "found", "offerer": offerer_json(chosen)})
    else:
        click.echo(f"Found {printable(chosen.instance)} at "
                   f"{format_address(chosen.host, chosen.port)}", err=True)
    return chosen


def _relay_for(target: _Target, relay: RelayAddress | None) -> RelayAddress | None:
    """The relay to meet at: the URI's, else the configured one, and only for a code
    that carries a meeting point (a plain code was never waiting at any relay)."""
    if target.secret.nameplate is None:
        return None
    chosen = target.relay or relay
    if chosen is None and target.address is None:
        raise BadInput("this code meets at a relay (the digits before '+'): give the relay "
                       f"the other device uses, with --relay tcp:HOST:PORT or {RELAY_ENV}")
    return chosen


def _route_shown(as_json: bool, taken: list[Route], *, shown: bool) -> Callable[[Route], None]:
    """Keep the route the pairing took in ``taken``; say it when a relay was in play."""
    def show(route: Route) -> None:
        taken.append(route)
        if not shown:
            return
        if as_json:
            emit_json({"event": "connected", "path": route.path, "remote": route.remote})
        elif route.path == "relay":
            click.echo(f"Connected through the {route.remote}.", err=True)
        else:
            click.echo(f"Connected directly to {route.remote}.", err=True)

    return show


def run_join_command(
    ctx: click.Context, *, args: tuple[str, ...], timeout: float, peer_name: str | None,
    no_discovery: bool, discovery_timeout: float, interfaces: tuple[str, ...], as_json: bool,
    relay: RelayAddress | None = None,
) -> None:
    """Run ``certpair join`` with parsed options (see its help)."""
    target = _target(args, ctx)
    relay = _relay_for(target, relay)
    if target.address is not None and (peer_name is not None or interfaces):
        raise BadInput("--peer-name and --interface only apply when looking for the offerer")
    if target.address is None and no_discovery:
        raise BadInput(f"--no-discovery needs the offerer's address: {USAGE}")
    checked = check_interfaces(interfaces)
    identity = identity_of(ctx)
    store = store_of(ctx)
    try:
        address, pin = target.address, target.fingerprint
        route: list[Route] = []
        if address is None and relay is None:
            found = _discover(target, peer_name=peer_name, timeout=discovery_timeout,
                              interfaces=checked, as_json=as_json)
            # The advertised fingerprint proves nothing, but pinning it means an
            # impostor answering at that address gets no proof to guess against.
            address, pin = (found.host, found.port), found.fingerprint
        if address is None:
            remote = f"relay {relay}"
        else:
            remote = f"[{address[0]}]:{address[1]}" if ":" in address[0] else \
                f"{address[0]}:{address[1]}"
        try:
            peer = asyncio.run(run_join(
                identity=identity, store=store, host=None if address is None else address[0],
                port=PAIRING_PORT if address is None else address[1],
                secret=target.secret, timeout=timeout, expected_fingerprint=pin,
                on_progress=_progress(as_json, remote, target.secret), relay=relay,
                on_route=_route_shown(as_json, route, shown=relay is not None)))
        except PairingFailed as exc:
            raise _explain(exc, target.secret) from exc
    except CertpairError as exc:
        if as_json:
            emit_json(failure_json(exc))
        raise
    report_paired(peer, as_json=as_json, path=None if relay is None else route[0].path)
