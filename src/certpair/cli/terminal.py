"""Text that came from another device, made safe to print, and commands safe to paste.

A peer chooses its name and its certificate's names; printed raw, control characters
and escape sequences in them would reach the terminal (moving the cursor, rewriting
earlier lines, changing the title), and pasted into a suggested command they would
reach a shell. Everything printed that a peer chose goes through :func:`printable`;
every suggested command is built with :func:`shell_command` (``shlex.quote`` per word).
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Iterable

__all__ = ["host_name_or", "printable", "shell_command"]

# A DNS name as curl and OpenSSL compare it: letters, digits, hyphens, dots.
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every control, format (bidi, zero-width) and unassigned character,
    and the backslash, written as a Python-style escape; other text unchanged."""
    return "".join(
        _escape(ch) if ch == "\\" or unicodedata.category(ch) in {"Cc", "Cf", "Cn", "Cs",
                                                                   "Zl", "Zp"} else ch
        for ch in text)


def shell_command(words: Iterable[str]) -> str:
    """One POSIX shell command line whose words are exactly ``words``."""
    return " ".join(shlex.quote(word) for word in words)


def host_name_or(name: str | None, placeholder: str) -> str:
    """``name`` if it is a plain DNS name, else ``placeholder`` (never a peer's text that
    a shell or a URL could read another way)."""
    return name if name is not None and _HOST_NAME.fullmatch(name) else placeholder
