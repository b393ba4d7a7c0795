"""How long must a secret be? The formulas of docs/SECURITY.md, as code.

* hmac mode: an attacker who impersonates the offerer captures m1 and guesses K
  offline until the key expires:  bits >= log2(guesses_per_second * lifetime / risk).
* cpace mode: an active attacker gets one online guess per code, and a pairing run
  issues at most ``codes`` codes:  bits >= log2(guesses_per_code * codes / risk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from certpair.codes import CPACE_MAX_DIGITS, CPACE_MIN_DIGITS, HMAC_MIN_BITS, Mode
from certpair.errors import BadInput

__all__ = [
    "DEFAULT_GPU_GUESSES_PER_SECOND",
    "DEFAULT_RISK",
    "Advice",
    "advise",
    "cpace_min_bits",
    "hmac_min_bits",
]

# One RTX 4090 computes about 2.2e10 single-block SHA-256 per second (hashcat 6.2.6,
# mode 1400, Chick3nman's published benchmark). Counting one compression per guess
# over-estimates an attack on m1 (which costs ~19 compressions), so it is a safe bound.
DEFAULT_GPU_GUESSES_PER_SECOND = 2.2e10
# The attacker's accepted chance of success: `certpair advise`'s default, and the bar
# `pair --mode hmac` holds a key's length to for its --ttl.
DEFAULT_RISK = 1e-6


def hmac_min_bits(*, guesses_per_second: float, lifetime: float, risk: float) -> float:
    """Minimum key entropy in hmac mode.

    Args:
        guesses_per_second: the attacker's offline HMAC rate.
        lifetime: seconds the key stays valid (its TTL).
        risk: accepted probability that the attacker finds K in time.

    Returns:
        Bits of entropy needed.

    Raises:
        BadInput: a non-positive input or a risk not below 1.
    """
    _check(guesses_per_second, lifetime, risk)
    return max(0.0, math.log2(guesses_per_second * lifetime / risk))


def cpace_min_bits(*, guesses_per_code: float = 1, codes: float, risk: float) -> float:
    """Minimum code entropy in cpace mode.

    Args:
        guesses_per_code: online guesses one code allows (1 in certpair).
        codes: codes issued in the window the risk covers (a run issues at most 10).
        risk: accepted probability that an attacker pairs by guessing.

    Returns:
        Bits of entropy needed.

    Raises:
        BadInput: a non-positive input or a risk not below 1.
    """
    _check(guesses_per_code, codes, risk)
    return max(0.0, math.log2(guesses_per_code * codes / risk))


def _check(a: float, b: float, risk: float) -> None:
    if a <= 0 or b <= 0 or not 0 < risk < 1:
        raise BadInput("rates, times and counts must be positive and the risk in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class Advice:
    """The minimum secret for one set of inputs."""

    mode: Mode
    bits: float
    length: int
    unit: str
    option: str


def advise(
    *, mode: Mode, risk: float, ttl: float = 300.0,
    guesses_per_second: float = DEFAULT_GPU_GUESSES_PER_SECOND, codes: int = 10,
) -> Advice:
    """The shortest certpair secret that keeps the attacker's chance below ``risk``.

    Args:
        mode: pairing mode.
        risk: accepted probability of a successful attack.
        ttl: key lifetime in seconds (hmac).
        guesses_per_second: offline guessing rate (hmac).
        codes: codes issued per run (cpace).

    Returns:
        Bits needed, the length in digits or base32 characters, and the ``pair`` option.

    Raises:
        BadInput: unusable inputs.
    """
    if mode is Mode.HMAC:
        bits = hmac_min_bits(guesses_per_second=guesses_per_second, lifetime=ttl, risk=risk)
        chars = max(math.ceil(bits / 5), math.ceil(HMAC_MIN_BITS / 5))
        return Advice(mode=mode, bits=bits, length=chars, unit="base32 characters",
                      option=f"--mode hmac --bits {chars * 5}")
    bits = cpace_min_bits(codes=codes, risk=risk)
    digits = max(CPACE_MIN_DIGITS, math.ceil(bits / math.log2(10)))
    if digits <= CPACE_MAX_DIGITS:
        option = f"--digits {digits}"
    else:
        # Longer than a code can be: hmac mode, with the key hmac mode needs for the same
        # risk against the offline attacker (not merely its default length).
        option = advise(mode=Mode.HMAC, risk=risk, ttl=ttl,
                        guesses_per_second=guesses_per_second).option
    return Advice(mode=mode, bits=bits, length=digits, unit="digits", option=option)
