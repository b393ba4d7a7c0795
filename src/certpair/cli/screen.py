"""Output with one live status line, updated in place on a terminal.

On a terminal, ``certpair pair`` keeps a countdown on the last line of the screen and
rewrites it with a carriage return, so that it never scrolls; every other line is
printed above it. Anywhere else (a pipe, a file, ``--json``) there is no status line,
and output stays one line per message.
"""

from __future__ import annotations

import sys

import click

__all__ = ["Screen", "clock_text"]

_CLEAR_LINE = "\r\x1b[K"


def clock_text(seconds: float) -> str:
    """``4:59`` or ``1:02:03`` for a number of seconds (rounded down, never negative)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Screen:
    """Lines on stdout or stderr, and (on a terminal) one status line kept at the bottom."""

    def __init__(self, *, live: bool) -> None:
        """``live``: keep a status line (only when standard output is a terminal)."""
        self.live = live
        self._status = ""

    @classmethod
    def for_stdout(cls, *, as_json: bool) -> Screen:
        """A live screen if stdout is a terminal and the output is text."""
        return cls(live=not as_json and sys.stdout.isatty())

    def _clear(self) -> None:
        if self.live and self._status:
            sys.stdout.write(_CLEAR_LINE)
            sys.stdout.flush()

    def _draw(self) -> None:
        if self.live and self._status:
            sys.stdout.write(self._status)
            sys.stdout.flush()

    def echo(self, text: str, *, err: bool = False, nl: bool = True) -> None:
        """Print a line above the status line."""
        self._clear()
        click.echo(text, err=err, nl=nl)
        self._draw()

    def status(self, text: str) -> None:
        """Replace the status line (nothing happens unless live)."""
        if not self.live:
            return
        self._status = text
        sys.stdout.write(_CLEAR_LINE + text)
        sys.stdout.flush()

    def close(self) -> None:
        """Remove the status line, leaving the cursor at the start of an empty line."""
        self._clear()
        self._status = ""
