"""Pairing secrets: generate, format, parse, check characters, entropy.

Two formats, told apart by shape alone so that the joiner never asks the network
which mode to use:

* **cpace code**: 6 to 12 random decimal digits followed by one Damm check digit,
  shown in groups of four (``4711-0815-3``).
* **hmac key**: 13 or more Crockford base32 characters (5 bits each) followed by one
  Luhn mod 32 check character, shown in groups of four (``7K2M-...-Q``).

Anything of 13 characters or fewer is a cpace code; anything longer is an hmac key,
so a short code can never be used as an hmac key. Spaces and dashes are ignored.

A secret met at a relay carries a **nameplate** in front, separated by ``+``
(``57218+4711-0815-3``): 4 random digits and a Damm check digit of their own, drawn
apart from the secret. It is public (it names the meeting point at the relay) and
never enters the proof; ``+`` appears in no secret, so the two parts never mix.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from certpair.errors import BadInput

__all__ = [
    "CPACE_DEFAULT_DIGITS",
    "CPACE_MAX_DIGITS",
    "CPACE_MIN_DIGITS",
    "HMAC_DEFAULT_BITS",
    "HMAC_MIN_BITS",
    "NAMEPLATE_DIGITS",
    "MalformedSecret",
    "Mode",
    "Secret",
    "WeakSecret",
    "WrongCheckCharacter",
    "damm_check_digit",
    "generate_code",
    "generate_hmac_key",
    "generate_nameplate",
    "parse_secret",
    "with_nameplate",
]

CPACE_MIN_DIGITS = 6
CPACE_DEFAULT_DIGITS = 8
CPACE_MAX_DIGITS = 12
HMAC_MIN_BITS = 64
HMAC_DEFAULT_BITS = 80
# Random digits of a nameplate (a check digit is added): 10,000 meeting points per
# relay (docs/SECURITY.md, "What a relay can do", for what that means on a busy one).
NAMEPLATE_DIGITS = 4
NAMEPLATE_SEPARATOR = "+"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Crockford's decoding aliases: letters people confuse with digits.
_CROCKFORD_ALIASES = {"O": "0", "I": "1", "L": "1"}
_DAMM_TABLE = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)


class Mode(enum.Enum):
    """Pairing mode; chosen by the secret's format."""

    CPACE = "cpace"
    HMAC = "hmac"


class MalformedSecret(BadInput):
    """The text is not a pairing secret of either format."""


class WrongCheckCharacter(BadInput):
    """The check character does not match: a typo, caught before any connection."""


class WeakSecret(BadInput):
    """The secret is too short for its mode."""


@dataclass(frozen=True, kw_only=True)
class Secret:
    """A parsed pairing secret.

    ``value`` is what the protocol consumes: the code's digits (check digit removed) as
    ASCII for cpace (the PRS), or the key bytes for hmac.
    """

    mode: Mode
    value: bytes = field(repr=False)
    display: str = field(repr=False)
    bits: float
    nameplate: str | None = None


def damm_check_digit(digits: str) -> int:
    """Return the Damm check digit of a string of decimal digits.

    Args:
        digits: ASCII decimal digits.

    Returns:
        The digit that makes the Damm checksum of ``digits + check`` zero.

    Raises:
        ValueError: ``digits`` contains a non-digit.
    """
    interim = 0
    for ch in digits:
        if ch not in "0123456789":
            raise ValueError("not a decimal digit")
        interim = _DAMM_TABLE[interim][int(ch)]
    return interim


def _luhn32_check(symbols: str) -> str:
    # Luhn mod N over the Crockford alphabet: catches every single substitution and
    # most adjacent transpositions.
    factor = 2
    total = 0
    for ch in reversed(symbols):
        addend = factor * _CROCKFORD.index(ch)
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return _CROCKFORD[(32 - total % 32) % 32]


def _secure_randbelow(n: int) -> int:
    import secrets  # noqa: PLC0415  # loads hashlib/OpenSSL; only needed to make secrets

    return secrets.randbelow(n)


def _group(text: str) -> str:
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def generate_code(
    digits: int = CPACE_DEFAULT_DIGITS,
    *,
    randbelow: Callable[[int], int] | None = None,
) -> Secret:
    """Make a fresh cpace code.

    Args:
        digits: how many random digits (6 to 12); a check digit is added.
        randbelow: source of uniform integers; ``secrets.randbelow`` if None.

    Returns:
        The code as a :class:`Secret`; ``display`` is the text to show the user.

    Raises:
        WeakSecret: ``digits`` is below 6.
        BadInput: ``digits`` is above 12.
    """
    if digits < CPACE_MIN_DIGITS:
        raise WeakSecret(f"a pairing code needs at least {CPACE_MIN_DIGITS} digits")
    if digits > CPACE_MAX_DIGITS:
        raise BadInput(f"a pairing code has at most {CPACE_MAX_DIGITS} digits; use hmac mode")
    draw = randbelow or _secure_randbelow
    body = "".join(str(draw(10)) for _ in range(digits))
    return parse_secret(_group(body + str(damm_check_digit(body))))


def generate_hmac_key(
    bits: int = HMAC_DEFAULT_BITS,
    *,
    randbelow: Callable[[int], int] | None = None,
) -> Secret:
    """Make a fresh hmac-mode key of at least ``bits`` bits.

    Args:
        bits: minimum entropy (64 or more); rounded up to whole base32 characters.
        randbelow: source of uniform integers; ``secrets.randbelow`` if None.

    Returns:
        The key as a :class:`Secret`.

    Raises:
        WeakSecret: ``bits`` is below 64.
    """
    if bits < HMAC_MIN_BITS:
        raise WeakSecret(f"an hmac key needs at least {HMAC_MIN_BITS} bits")
    draw = randbelow or _secure_randbelow
    body = "".join(_CROCKFORD[draw(32)] for _ in range(math.ceil(bits / 5)))
    return parse_secret(_group(body + _luhn32_check(body)))


def generate_nameplate(*, randbelow: Callable[[int], int] | None = None) -> str:
    """Draw a fresh nameplate: public, random, and independent of any secret.

    Args:
        randbelow: source of uniform integers; ``secrets.randbelow`` if None.

    Returns:
        ``NAMEPLATE_DIGITS`` random digits followed by their Damm check digit.
    """
    draw = randbelow or _secure_randbelow
    body = "".join(str(draw(10)) for _ in range(NAMEPLATE_DIGITS))
    return body + str(damm_check_digit(body))


def with_nameplate(secret: Secret, nameplate: str) -> Secret:
    """The same secret, to be met at a relay under ``nameplate``.

    Raises:
        MalformedSecret: the nameplate is not digits with a right check digit.
    """
    _check_nameplate(nameplate)
    plain = secret.display.rsplit(NAMEPLATE_SEPARATOR, 1)[-1]
    return Secret(mode=secret.mode, value=secret.value, bits=secret.bits,
                  display=f"{nameplate}{NAMEPLATE_SEPARATOR}{plain}", nameplate=nameplate)


def _check_nameplate(compact: str) -> None:
    if not compact.isascii() or not compact.isdigit() or len(compact) != NAMEPLATE_DIGITS + 1:
        raise MalformedSecret(f"the part before {NAMEPLATE_SEPARATOR!r} (the relay's meeting "
                              f"point) is {NAMEPLATE_DIGITS + 1} digits")
    if damm_check_digit(compact) != 0:
        raise WrongCheckCharacter("the meeting point's check digit (before "
                                  f"{NAMEPLATE_SEPARATOR!r}) is wrong (typo?)")


def parse_secret(text: str) -> Secret:
    """Parse what a user typed into a :class:`Secret`, deciding the mode by its shape.

    Args:
        text: the secret as typed; spaces and dashes are ignored, case does not matter;
            a nameplate may stand in front, separated by ``+``.

    Returns:
        The parsed secret.

    Raises:
        MalformedSecret: neither format.
        WrongCheckCharacter: the check character does not match (a typo).
        WeakSecret: a code with fewer than 6 digits.
    """
    if not text.isascii():
        raise MalformedSecret("a pairing secret is made of ASCII letters and digits")
    if NAMEPLATE_SEPARATOR in text:
        nameplate, _, rest = text.partition(NAMEPLATE_SEPARATOR)
        nameplate = "".join(ch for ch in nameplate if ch not in " -\t")
        _check_nameplate(nameplate)
        if NAMEPLATE_SEPARATOR in rest:
            raise MalformedSecret(f"a pairing secret has at most one {NAMEPLATE_SEPARATOR!r}")
        return with_nameplate(parse_secret(rest), nameplate)
    compact = "".join(ch for ch in text.upper() if ch not in " -\t")
    if not compact:
        raise MalformedSecret("the pairing secret is empty")
    if len(compact) <= CPACE_MAX_DIGITS + 1:
        return _parse_code(compact)
    return _parse_hmac_key(compact)


def _parse_code(compact: str) -> Secret:
    if not compact.isascii() or not compact.isdigit():
        raise MalformedSecret("a pairing code is made of digits only")
    body = compact[:-1]
    if len(body) < CPACE_MIN_DIGITS:
        raise WeakSecret(f"a pairing code has at least {CPACE_MIN_DIGITS} digits and a check digit")
    if damm_check_digit(compact) != 0:
        raise WrongCheckCharacter("the pairing code's check digit is wrong (typo?)")
    return Secret(
        mode=Mode.CPACE,
        value=body.encode("ascii"),
        display=_group(compact),
        bits=len(body) * math.log2(10),
    )


def _parse_hmac_key(compact: str) -> Secret:
    symbols = "".join(_CROCKFORD_ALIASES.get(ch, ch) for ch in compact)
    if any(ch not in _CROCKFORD for ch in symbols):
        raise MalformedSecret("an hmac key is made of base32 letters and digits only")
    body, check = symbols[:-1], symbols[-1]
    if _luhn32_check(body) != check:
        raise WrongCheckCharacter("the hmac key's check character is wrong (typo?)")
    value = 0
    for ch in body:
        value = value * 32 + _CROCKFORD.index(ch)
    nbits = len(body) * 5
    if nbits < HMAC_MIN_BITS:
        raise WeakSecret(f"an hmac key needs at least {HMAC_MIN_BITS} bits")
    return Secret(
        mode=Mode.HMAC,
        value=value.to_bytes((nbits + 7) // 8, "big"),
        display=_group(symbols),
        bits=float(nbits),
    )
