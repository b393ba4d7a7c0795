"""What a device name may be: the one rule for one's own name and for names peers send.

A name is shown to people next to a fingerprint, so it must not be able to hide or
disguise itself: no control characters, no Unicode format characters (category Cf:
bidi overrides that reverse the text shown, zero-width joiners and spaces that make two
different names look alike), and not empty or blank.
"""

from __future__ import annotations

import unicodedata

from certpair.errors import BadInput

__all__ = ["MAX_NAME_BYTES", "BadName", "check_name", "same_name"]

MAX_NAME_BYTES = 64


class BadName(BadInput):
    """A device name breaks the rule; the message says which part."""


def check_name(name: str) -> str:
    """Check a device name: 1 to 64 bytes of UTF-8, not blank, no control or format chars.

    Args:
        name: the proposed name.

    Returns:
        The name, unchanged.

    Raises:
        BadName: empty, blank, too long, or holding a control or format character.
    """
    try:
        encoded = name.encode("utf-8", errors="strict")
    except UnicodeEncodeError:
        raise BadName("a device name must be valid UTF-8") from None
    if not 1 <= len(encoded) <= MAX_NAME_BYTES:
        raise BadName(f"a device name is 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in name):
        raise BadName("a device name cannot contain control characters")
    if any(unicodedata.category(ch) == "Cf" for ch in name):
        raise BadName("a device name cannot contain invisible formatting characters "
                      "(bidi overrides, zero-width characters)")
    if not name.strip():
        raise BadName("a device name cannot be blank")
    return name


def same_name(a: str, b: str) -> bool:
    """Whether two names read the same to a person (NFKC, case-folded, blanks collapsed)."""
    return _key(a) == _key(b)


def _key(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())
