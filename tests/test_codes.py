"""Pairing secrets: generation, parsing, check characters and the mode chosen by shape."""

from __future__ import annotations

import math
import random
import string
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certpair.codes import (
    CPACE_MAX_DIGITS,
    CPACE_MIN_DIGITS,
    MalformedSecret,
    Mode,
    Secret,
    WeakSecret,
    WrongCheckCharacter,
    damm_check_digit,
    generate_code,
    generate_hmac_key,
    parse_secret,
)
from certpair.errors import BadInput
from tests.helpers import fixed_randbelow, make_code, make_hmac_key

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CODE_LENGTHS: Final = range(CPACE_MIN_DIGITS, CPACE_MAX_DIGITS + 1)
_HMAC_BITS: Final = (64, 80, 128)


def _compact(text: str) -> str:
    return text.replace("-", "")


def _random_codes(digits: int, count: int) -> list[str]:
    rng = random.Random(digits)
    return [
        _compact(generate_code(digits, randbelow=rng.randrange).display) for _ in range(count)
    ]


def _luhn_mod_n_valid(text: str, alphabet: str) -> bool:
    # Independent validator (Wikipedia, "Luhn mod N algorithm", validation form): with
    # the check character included, doubling starts at the second character from the right.
    n = len(alphabet)
    factor = 1
    total = 0
    for ch in reversed(text):
        addend = factor * alphabet.index(ch)
        factor = 2 if factor == 1 else 1
        total += addend // n + addend % n
    return total % n == 0


# --- generation and round trips -------------------------------------------------------


@pytest.mark.parametrize("digits", _CODE_LENGTHS)
def test_generated_code_parses_back_to_same_cpace_secret(digits: int) -> None:
    code = generate_code(digits, randbelow=random.Random(digits).randrange)
    parsed = parse_secret(code.display)
    assert parsed == code
    assert parsed.mode is Mode.CPACE
    assert len(parsed.value) == digits
    assert parsed.value.isdigit()
    assert parsed.bits == pytest.approx(digits * math.log2(10))


@pytest.mark.parametrize("digits", _CODE_LENGTHS)
def test_code_value_is_the_digits_without_check_digit(digits: int) -> None:
    body = "".join(str(i % 10) for i in range(digits))
    secret = make_code(body)
    assert secret.value == body.encode("ascii")
    assert _compact(secret.display) == body + str(damm_check_digit(body))


@pytest.mark.parametrize(("bits", "chars"), [(64, 13), (80, 16), (128, 26)])
def test_generated_hmac_key_parses_back_to_same_hmac_secret(bits: int, chars: int) -> None:
    key = generate_hmac_key(bits, randbelow=random.Random(bits).randrange)
    parsed = parse_secret(key.display)
    assert parsed == key
    assert parsed.mode is Mode.HMAC
    assert len(_compact(key.display)) == chars + 1
    assert parsed.bits == chars * 5 >= bits
    assert len(parsed.value) == math.ceil(chars * 5 / 8)


def test_hmac_key_value_is_big_endian_base32_of_body() -> None:
    body = "0" * 15 + "Z"  # value 31
    check = next(c for c in _CROCKFORD if _luhn_mod_n_valid(body + c, _CROCKFORD))
    secret = parse_secret(body + check)
    assert secret.value == (31).to_bytes(10, "big")


@pytest.mark.parametrize("bits", _HMAC_BITS)
def test_hmac_check_character_is_luhn_mod_32(bits: int) -> None:
    for seed in range(20):
        key = _compact(make_hmac_key(seed, bits).display)
        assert _luhn_mod_n_valid(key, _CROCKFORD)


def test_damm_check_digit_matches_published_example() -> None:
    # Wikipedia, "Damm algorithm": the check digit of 572 is 4.
    assert damm_check_digit("572") == 4
    assert damm_check_digit("5724") == 0


def test_damm_check_digit_rejects_non_digits() -> None:
    with pytest.raises(ValueError, match="digit"):
        damm_check_digit("12a")


def test_injected_randbelow_makes_code_deterministic() -> None:
    first = generate_code(8, randbelow=lambda n: 7)
    second = generate_code(8, randbelow=lambda n: 7)
    assert first == second
    assert first.display == "7777-7777-7"
    assert generate_code(6, randbelow=fixed_randbelow([1, 2, 3, 4, 5, 6])).display == "1234-566"


def test_injected_randbelow_makes_hmac_key_deterministic() -> None:
    counting = list(range(32))
    first = generate_hmac_key(80, randbelow=fixed_randbelow(counting))
    second = generate_hmac_key(80, randbelow=fixed_randbelow(counting))
    assert first == second
    assert first.display == "0123-4567-89AB-CDEF-8"
    zeros = generate_hmac_key(80, randbelow=lambda n: 0)
    assert zeros.display == "0000-0000-0000-0000-0"
    assert zeros.value == bytes(10)


def test_generation_asks_randbelow_for_one_symbol_per_character() -> None:
    asked: list[int] = []

    def spy(n: int) -> int:
        asked.append(n)
        return 0

    generate_code(8, randbelow=spy)
    assert asked == [10] * 8
    asked.clear()
    generate_hmac_key(80, randbelow=spy)
    assert asked == [32] * 16


def test_default_generation_draws_fresh_secrets() -> None:
    codes = {generate_code().display for _ in range(5)}
    keys = {generate_hmac_key().display for _ in range(5)}
    assert len(codes) == 5
    assert len(keys) == 5


# --- weak and malformed -----------------------------------------------------------------


def test_generate_code_below_six_digits_is_weak() -> None:
    with pytest.raises(WeakSecret):
        generate_code(5)


def test_generate_code_above_twelve_digits_is_bad_input() -> None:
    with pytest.raises(BadInput, match="at most"):
        generate_code(13)


def test_generate_hmac_key_below_64_bits_is_weak() -> None:
    with pytest.raises(WeakSecret):
        generate_hmac_key(63)


@pytest.mark.parametrize("body", ["1", "12", "1234", "12345"])
def test_code_with_fewer_than_six_digits_is_weak_even_with_valid_check(body: str) -> None:
    with pytest.raises(WeakSecret):
        parse_secret(body + str(damm_check_digit(body)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "-- -",
        "\t",
        "abcdef",
        "1234-567a-8",
        "1234567.8",
        "١٢٣٤٥٦٧٨٩",  # Arabic-Indic digits are digits, but not ASCII ones
        "ABCDEFGHJKMNP",  # 13 base32 characters: the shape of a code, not a key
        "0123-4567-89AB-CDEU-8",  # U is not in Crockford's alphabet
        "!@#$%^&*()_+=~[]",
        "0123\n4567\n89AB\nCDEF\n8",
    ],
)
def test_garbage_is_malformed(text: str) -> None:
    with pytest.raises(MalformedSecret):
        parse_secret(text)


def test_secret_errors_are_bad_input() -> None:
    for error in (MalformedSecret, WrongCheckCharacter, WeakSecret):
        assert issubclass(error, BadInput)


# --- typo detection -------------------------------------------------------------------


@pytest.mark.parametrize("digits", _CODE_LENGTHS)
def test_every_single_digit_substitution_in_code_is_caught(digits: int) -> None:
    for code in _random_codes(digits, 20):
        for i, original in enumerate(code):
            for digit in "0123456789".replace(original, ""):
                typo = code[:i] + digit + code[i + 1 :]
                with pytest.raises(WrongCheckCharacter):
                    parse_secret(typo)


@pytest.mark.parametrize("digits", _CODE_LENGTHS)
def test_every_adjacent_transposition_in_code_is_caught(digits: int) -> None:
    checked = 0
    for code in _random_codes(digits, 40):
        for i in range(len(code) - 1):
            if code[i] == code[i + 1]:
                continue
            typo = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
            with pytest.raises(WrongCheckCharacter):
                parse_secret(typo)
            checked += 1
    assert checked > 30 * digits  # the loop really ran, check digit included


def test_every_adjacent_digit_pair_transposition_is_caught_at_every_position() -> None:
    # Exhaustive over digit pairs: a code with "ab" at position i, for all a != b.
    for i in range(CPACE_MIN_DIGITS):
        for a in "0123456789":
            for b in "0123456789".replace(a, ""):
                body = ("31415926"[:i] + a + b + "27182818")[: CPACE_MIN_DIGITS + 2]
                code = body + str(damm_check_digit(body))
                typo = code[:i] + b + a + code[i + 2 :]
                with pytest.raises(WrongCheckCharacter):
                    parse_secret(typo)


@pytest.mark.parametrize("bits", _HMAC_BITS)
def test_every_single_character_substitution_in_hmac_key_is_caught(bits: int) -> None:
    for seed in range(5):
        key = _compact(make_hmac_key(seed, bits).display)
        for i, original in enumerate(key):
            for symbol in _CROCKFORD.replace(original, ""):
                typo = key[:i] + symbol + key[i + 1 :]
                with pytest.raises(WrongCheckCharacter):
                    parse_secret(typo)


# --- clean-up and shape ---------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "{}",
        "{lower}",
        " {} ",
        "{nodash}",
        "{spaced}",
        "{tabbed}",
        "--{nodash}--",
    ],
)
@pytest.mark.parametrize("mode", list(Mode))
def test_spaces_dashes_and_case_are_ignored(spelling: str, mode: Mode) -> None:
    secret = make_code("31415926") if mode is Mode.CPACE else make_hmac_key(7)
    display = secret.display
    nodash = _compact(display)
    text = spelling.format(
        display,
        lower=display.lower(),
        nodash=nodash,
        spaced=" ".join(nodash),
        tabbed="\t".join(nodash[i : i + 3] for i in range(0, len(nodash), 3)),
    )
    assert parse_secret(text) == secret


def test_crockford_aliases_read_as_digits_in_hmac_key() -> None:
    secret = generate_hmac_key(80, randbelow=fixed_randbelow([0, 1]))
    compact = _compact(secret.display)
    assert compact.startswith("0101")
    aliased = "OIOL" + compact[4:]
    assert parse_secret(aliased) == secret
    assert parse_secret(aliased.lower()) == secret


@pytest.mark.parametrize("length", range(2, CPACE_MAX_DIGITS + 2))
def test_valid_looking_key_of_13_characters_or_fewer_is_read_as_code(length: int) -> None:
    # Base32 with a correct Luhn mod 32 check, but of code length: it goes down the code
    # path (and fails there as non-digits), never the hmac path (which would say weak).
    body = ("Z7" * 10)[: length - 1]
    check = next(c for c in _CROCKFORD if _luhn_mod_n_valid(body + c, _CROCKFORD))
    with pytest.raises(MalformedSecret, match="digits only"):
        parse_secret(body + check)


@pytest.mark.parametrize("length", range(CPACE_MAX_DIGITS + 2, 30))
def test_shape_longer_than_13_characters_is_hmac(length: int) -> None:
    body = "".join(str(i % 10) for i in range(length - 1))
    check = next(c for c in _CROCKFORD if _luhn_mod_n_valid(body + c, _CROCKFORD))
    secret = parse_secret(body + check)
    assert secret.mode is Mode.HMAC


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=string.digits + " -", max_size=40).filter(
        lambda t: 0 < len(_compact(t).replace(" ", "")) <= CPACE_MAX_DIGITS + 1
    )
)
def test_short_digit_code_never_parses_as_hmac(text: str) -> None:
    try:
        secret = parse_secret(text)
    except BadInput:
        return
    assert secret.mode is Mode.CPACE


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parse_secret_raises_only_bad_input(text: str) -> None:
    try:
        secret = parse_secret(text)
    except (MalformedSecret, WrongCheckCharacter, WeakSecret):
        return
    assert secret.bits >= 6 * math.log2(10)


# --- no secret in repr ----------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", [make_code("98765432"), make_hmac_key(3)], ids=["cpace", "hmac"]
)
def test_secret_repr_hides_value_and_display(secret: Secret) -> None:
    shown = repr(secret) + str(secret)
    assert _compact(secret.display) not in shown
    assert secret.display not in shown
    assert repr(secret.value) not in shown
    assert secret.value.hex() not in shown
    assert secret.mode.name in shown
