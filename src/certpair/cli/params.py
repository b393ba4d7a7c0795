"""Validation at the edge: click parameter types for secrets, addresses and numbers."""

from __future__ import annotations

import math
import sys
from typing import Any

import click

from certpair.addresses import parse_address
from certpair.codes import Secret, parse_secret

__all__ = ["Finite", "HostPort", "SecretParam", "parse_host_port", "read_stdin_secret"]


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` (see
    :func:`certpair.addresses.parse_address`, the one reader of addresses).

    Raises:
        BadInput: the address is malformed.
    """
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
