"""Validation at the edge: click parameter types for secrets and addresses."""

from __future__ import annotations

import sys

import click

from certpair.codes import Secret, parse_secret
from certpair.errors import BadInput

__all__ = ["HostPort", "parse_host_port"]


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``.

    Raises:
        BadInput: empty host or a port outside 1..65535.
    """
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadInput(f"bad address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise BadInput(f"bad address {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise BadInput(f"bad address {text!r}: no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise BadInput(f"bad port in {text!r}")
    return host, int(port_text)


class SecretParam(click.ParamType):  # type: ignore[type-arg]  # click 8.1 is not generic
    """A pairing secret; its format decides the mode.

    ``-`` reads the secret from the first line of standard input, so it need not
    appear in the process's arguments, which other local users can read.
    """

    name = "secret"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> Secret:
        if isinstance(value, Secret):
            return value
        text = str(value)
        if text == "-":
            text = sys.stdin.readline().strip()
        return parse_secret(text)


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
