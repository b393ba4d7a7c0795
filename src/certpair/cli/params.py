"""Validation at the edge: click parameter types for secrets, addresses and numbers."""

from __future__ import annotations

import ipaddress
import math
import sys
from typing import Any

import click

from certpair.codes import Secret, parse_secret
from certpair.errors import BadInput

__all__ = ["Finite", "HostPort", "SecretParam", "parse_host_port", "read_stdin_secret"]

_MAX_PORT_DIGITS = 5
_NOT_IN_HOST = frozenset(" \t/\\@?#[]")


def _port(text: str, port_text: str) -> int:
    # str.isdigit() also accepts other scripts' digits (e.g. Arabic-Indic), which int()
    # reads as a port: only ASCII digits are a port here.
    if (not port_text.isascii() or not port_text.isdigit()
            or len(port_text) > _MAX_PORT_DIGITS or not 1 <= int(port_text) <= 65535):
        raise BadInput(f"bad port in {text!r}: a port is 1 to 65535, in ASCII digits")
    return int(port_text)


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``.

    An IPv6 address without brackets is accepted without a port (``::1``); with a port
    it must be bracketed (``[::1]:47820``).

    Args:
        text: what the user typed.
        default_port: the port when none is given.

    Returns:
        ``(host, port)``; an IPv6 host without its brackets.

    Raises:
        BadInput: empty host, a character no host has, a ``:`` with no port after it, a
            port outside 1..65535 or not in ASCII digits, or an unbracketed IPv6-like
            text that is not an IPv6 address.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadInput(f"bad address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise BadInput(f"bad address {text!r}: only ':PORT' may follow ']'")
        port_text: str | None = rest[1:] if rest else None
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise BadInput(f"bad address {text!r}: give HOST:PORT, or [IPV6]:PORT for an "
                           "IPv6 address") from None
        host, port_text = text, None
    elif ":" in text:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host:
        raise BadInput(f"bad address {text!r}: no host")
    if any(ch in _NOT_IN_HOST or not ch.isprintable() for ch in host):
        raise BadInput(f"bad address {text!r}: not a host name or IP address")
    if port_text is None:
        return host, default_port
    if not port_text:
        raise BadInput(f"bad address {text!r}: no port after ':' (drop the ':' for the "
                       f"default port {default_port})")
    return host, _port(text, port_text)


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
