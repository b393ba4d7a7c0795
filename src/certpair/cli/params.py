"""Validation at the edge: click parameter types for secrets, addresses and numbers."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from certpair.errors import BadInput
from certpair.relay.address import RELAY_ENV, RelayAddress, parse_relay

if TYPE_CHECKING:
    from certpair.codes import Secret

# The address and code readers load when a value is converted: every command's module
# imports this one at start (``--help`` too), most never parse a code.

__all__ = [
    "Finite", "HostPort", "RelayParam", "SecretParam", "parse_host_port", "read_stdin_secret",
    "relay_option",
]

F = TypeVar("F", bound=Callable[..., Any])


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` (see
    :func:`certpair.addresses.parse_address`, the one reader of addresses).

    Raises:
        BadInput: the address is malformed.
    """
    from certpair.addresses import parse_address  # noqa: PLC0415  # see the imports

    return parse_address(text, default_port)


class Finite(click.FloatRange):
    """A float within bounds, never ``nan`` or infinite: every number has a limit."""

    def __init__(self, min: float, max: float, *, min_open: bool = False,  # click's names
                 max_open: bool = False) -> None:
        super().__init__(min=min, max=max, min_open=min_open, max_open=max_open)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        converted: float = super().convert(number, param, ctx)
        return converted


class SecretParam(click.ParamType):  # type: ignore[type-arg]  # click 8.1 is not generic
    """A pairing secret; its format decides the mode.

    ``-`` reads the secret from standard input, so it need not appear in the process's
    arguments, which other local users can read: on a terminal it is asked for without
    echo, otherwise the first line is read.
    """

    name = "secret"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> Secret:
        from certpair.codes import Secret, parse_secret  # noqa: PLC0415  # see the imports

        if isinstance(value, Secret):
            return value
        text = str(value)
        if text == "-":
            text = read_stdin_secret()
        return parse_secret(text)


def read_stdin_secret() -> str:
    """The secret (or ``certpair://`` URI) for an argument ``-``: asked for without echo
    on a terminal, otherwise the first line of standard input."""
    if sys.stdin.isatty():
        text: str = click.prompt("Pairing code (not shown)", hide_input=True,
                                 err=True, default="", show_default=False)
        return text.strip()
    return sys.stdin.readline().strip()


class RelayParam(click.ParamType):  # type: ignore[type-arg]  # click 8.1 is not generic
    """``tcp:HOST:PORT``, a magic-wormhole transit relay; ``none`` (or empty) for none."""

    name = "relay"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> RelayAddress | None:
        if value is None or isinstance(value, RelayAddress):
            return value
        text = str(value).strip()
        if text.lower() in {"", "none"}:
            return None
        try:
            return parse_relay(text)
        except BadInput as exc:
            if param is not None and param.name and ctx is not None and \
                    ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
                raise BadInput(f"{RELAY_ENV}: {exc}") from None
            raise


def relay_option(func: F) -> F:
    """``--relay tcp:HOST:PORT`` (else ``CERTPAIR_RELAY``); nothing contacts a relay
    unless one is given."""
    return click.option(
        "--relay", type=RelayParam(), envvar=RELAY_ENV, default=None, show_envvar=True,
        metavar="tcp:HOST:PORT",
        help="A magic-wormhole transit relay to meet the other device at, when no direct "
             "route works (docs/RELAY.md); `none` turns off one set in CERTPAIR_RELAY.",
    )(func)


class HostPort(click.ParamType):  # type: ignore[type-arg]  # click 8.1 is not generic
    """``HOST[:PORT]``."""

    name = "host[:port]"

    def __init__(self, default_port: int) -> None:
        self.default_port = default_port

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, int]:
        if isinstance(value, tuple):
            return (str(value[0]), int(value[1]))
        return parse_host_port(str(value), self.default_port)
