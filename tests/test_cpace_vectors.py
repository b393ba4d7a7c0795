"""Known-answer tests for certpair.protocol.cpace against draft-irtf-cfrg-cpace.

The "G_25519" and "X25519_points" entries come from tests/vectors/cpace/testvectors.json
(copied unchanged from the draft's repository). Values that exist only in the draft text
(string-utility vectors, the generator string, the scalar s and results q0..qb for the
X25519 points) are transcribed below with the draft section they come from.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import json
from pathlib import Path
from typing import Final, cast

import pytest

from certpair.protocol.cpace import (
    DSI,
    S_IN_BYTES,
    InvalidShare,
    InvalidTag,
    calculate_generator,
    confirmation_key,
    confirmation_tag,
    generator_string,
    intermediate_session_key,
    lv_cat,
    prepend_len,
    public_share,
    shared_point,
    verify_confirmation_tag,
)

_VECTORS_PATH: Final = Path(__file__).parent / "vectors" / "cpace" / "testvectors.json"
_ALL_VECTORS: Final = cast(dict[str, dict[str, str]], json.loads(_VECTORS_PATH.read_text()))
_G: Final = {name: bytes.fromhex(value) for name, value in _ALL_VECTORS["G_25519"].items()}
_POINTS: Final = _ALL_VECTORS["X25519_points"]

# Draft, "Test vectors for G_X25519.scalar_mult_vfy: low order points": the scalar used
# for every point, and the expected non-identity results. The JSON labels all twelve
# points "Invalid", but only u0..u5 and u7 must abort; u6 and u8..ub carry bit #255 and
# give a regular K once that bit is cleared as RFC 7748 requires.
_POINT_SCALAR: Final = bytes.fromhex(
    "af46e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449aff"
)
_MUST_ABORT: Final = (
    "Invalid Y0",
    "Invalid Y1",
    "Invalid Y2",
    "Invalid Y3",
    "Invalid Y4",
    "Invalid Y5",
    "Invalid Y7",
)
_EXPECTED_K: Final = {
    "Invalid Y6": "d8e2c776bbacd510d09fd9278b7edcd25fc5ae9adfba3b6e040e8d3b71b21806",
    "Invalid Y8": "c85c655ebe8be44ba9c0ffde69f2fe10194458d137f09bbff725ce58803cdb38",
    "Invalid Y9": "db64dafa9b8fdd136914e61461935fe92aa372cb056314e1231bc4ec12417456",
    "Invalid Y10": "e062dcd5376d58297be2618c7498f55baa07d7e03184e8aada20bca28888bf7a",
    "Invalid Y11": "993c6ad11c4c29da9a56f7691fd0ff8d732e49de6250b6c2e80003ff4629a175",
}

# Draft, "Test vectors for calculate_generator with group X25519".
_GENERATOR_STRING: Final = bytes.fromhex(
    "0843506163653235350850617373776f72646d"
    + "00" * 109
    + "180b415f696e69746961746f720b425f726573706f6e646572107e4b4791d6a8ef019b936c79fb7f2c57"
)

# Draft, "prepend_len test vectors".
_PREPEND_LEN_VECTORS: Final = [
    (b"", "00"),
    (b"1234", "0431323334"),
    (bytes(range(127)), "7f" + bytes(range(127)).hex()),
    (bytes(range(128)), "8001" + bytes(range(128)).hex()),
]

# Draft, "Testvector for lv_cat()" and "Test vectors transcript_ir function"
# (transcript_ir is lv_cat(Ya, ADa) || lv_cat(Yb, ADb)).
_LV_CAT_VECTORS: Final = [
    ((b"1234", b"5", b"", b"678"), "043132333401350003363738"),
    ((b"123", b"PartyA", b"234", b"PartyB"), "03313233065061727479410332333406506172747942"),
    ((b"3456", b"PartyA", b"2345", b"PartyB"), "043334353606506172747941043233343506506172747942"),
]


def _flip_bit(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def _session() -> tuple[bytes, bytes, bytes]:
    """Return (mac_key, Ya, Yb) for the draft's X25519 session."""
    isk = intermediate_session_key(_G["sid"], _G["K"], _G["Ya"], _G["ADa"], _G["Yb"], _G["ADb"])
    return confirmation_key(_G["sid"], isk), _G["Ya"], _G["Yb"]


@pytest.mark.parametrize(("data", "expected"), _PREPEND_LEN_VECTORS)
def test_prepend_len_matches_draft(data: bytes, expected: str) -> None:
    assert prepend_len(data) == bytes.fromhex(expected)


def test_prepend_len_uses_multibyte_leb128_for_long_input() -> None:
    assert prepend_len(bytes(300))[:2] == bytes([0xAC, 0x02])


@pytest.mark.parametrize(("parts", "expected"), _LV_CAT_VECTORS)
def test_lv_cat_matches_draft(parts: tuple[bytes, ...], expected: str) -> None:
    assert lv_cat(*parts) == bytes.fromhex(expected)


def test_transcript_ir_of_vector_session_matches_draft() -> None:
    expected = bytes.fromhex(
        "201d13c89278cdadd826f6d8d7f887701430f8380ddc17611cdd6dc9"
        "89ce0c9f320341446120248cccf6d5cdc3646f0ad593f9e6cef4e69d"
        "4945f8372e623512ecea3218562303414462"
    )
    assert lv_cat(_G["Ya"], _G["ADa"]) + lv_cat(_G["Yb"], _G["ADb"]) == expected


def test_generator_string_matches_draft() -> None:
    result = generator_string(DSI, _G["PRS"], _G["CI"], _G["sid"], S_IN_BYTES)
    assert len(result) == 170
    assert result == _GENERATOR_STRING


def test_generator_matches_vector() -> None:
    assert calculate_generator(_G["PRS"], _G["CI"], _G["sid"]) == _G["g"]


@pytest.mark.parametrize(("scalar_name", "share_name"), [("ya", "Ya"), ("yb", "Yb")])
def test_public_share_matches_vector(scalar_name: str, share_name: str) -> None:
    assert public_share(_G[scalar_name], _G["g"]) == _G[share_name]


@pytest.mark.parametrize(("scalar_name", "peer_share_name"), [("ya", "Yb"), ("yb", "Ya")])
def test_shared_point_matches_vector_from_both_sides(
    scalar_name: str, peer_share_name: str
) -> None:
    assert shared_point(_G[scalar_name], _G[peer_share_name]) == _G["K"]


def test_isk_ir_matches_vector() -> None:
    isk = intermediate_session_key(_G["sid"], _G["K"], _G["Ya"], _G["ADa"], _G["Yb"], _G["ADb"])
    assert isk == _G["ISK_IR"]


def test_full_exchange_agrees_on_isk() -> None:
    g = calculate_generator(_G["PRS"], _G["CI"], _G["sid"])
    ya_share = public_share(_G["ya"], g)
    yb_share = public_share(_G["yb"], g)
    isk_a = intermediate_session_key(
        _G["sid"], shared_point(_G["ya"], yb_share), ya_share, _G["ADa"], yb_share, _G["ADb"]
    )
    isk_b = intermediate_session_key(
        _G["sid"], shared_point(_G["yb"], ya_share), ya_share, _G["ADa"], yb_share, _G["ADb"]
    )
    assert isk_a == isk_b == _G["ISK_IR"]


def test_every_x25519_point_is_classified() -> None:
    # A new entry in the JSON must not be silently skipped by the tests below.
    assert set(_POINTS) == set(_MUST_ABORT) | set(_EXPECTED_K)


@pytest.mark.parametrize("name", _MUST_ABORT)
def test_low_order_point_raises_invalid_share(name: str) -> None:
    with pytest.raises(InvalidShare) as excinfo:
        shared_point(_POINT_SCALAR, bytes.fromhex(_POINTS[name]))
    assert _POINT_SCALAR.hex() not in str(excinfo.value).lower()


@pytest.mark.parametrize("name", sorted(_EXPECTED_K))
def test_point_with_bit_255_set_gives_expected_k(name: str) -> None:
    point = bytes.fromhex(_POINTS[name])
    assert point[-1] & 0x80
    assert shared_point(_POINT_SCALAR, point) == bytes.fromhex(_EXPECTED_K[name])


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_peer_share_of_wrong_length_raises_invalid_share(length: int) -> None:
    with pytest.raises(InvalidShare):
        shared_point(_G["ya"], bytes([9]) * length)


def test_invalid_share_is_a_value_error() -> None:
    assert issubclass(InvalidShare, ValueError)
    assert issubclass(InvalidTag, ValueError)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_scalar_of_wrong_length_raises_value_error(length: int) -> None:
    with pytest.raises(ValueError, match="scalar"):
        public_share(bytes(length), _G["g"])
    with pytest.raises(ValueError, match="scalar"):
        shared_point(bytes(length), _G["Yb"])


@pytest.mark.parametrize("bit", range(len(b"Password") * 8))
def test_flipped_prs_bit_changes_generator(bit: int) -> None:
    flipped = _flip_bit(_G["PRS"], bit)
    assert calculate_generator(flipped, _G["CI"], _G["sid"]) != _G["g"]


def test_confirmation_key_is_sha512_of_label_sid_isk() -> None:
    expected = hashlib.sha512(b"CPaceMac" + _G["sid"] + _G["ISK_IR"]).digest()
    assert confirmation_key(_G["sid"], _G["ISK_IR"]) == expected


def test_confirmation_tag_is_hmac_sha512_over_lv_cat() -> None:
    mac_key, ya_share, _ = _session()
    expected = std_hmac.new(mac_key, lv_cat(ya_share, _G["ADa"]), hashlib.sha512).digest()
    tag = confirmation_tag(mac_key, ya_share, _G["ADa"])
    assert len(tag) == 64
    assert tag == expected


def test_right_tag_verifies() -> None:
    mac_key, ya_share, yb_share = _session()
    verify_confirmation_tag(
        mac_key, ya_share, _G["ADa"], confirmation_tag(mac_key, ya_share, _G["ADa"])
    )
    verify_confirmation_tag(
        mac_key, yb_share, _G["ADb"], confirmation_tag(mac_key, yb_share, _G["ADb"])
    )


@pytest.mark.parametrize("bit", [0, 7, 255, 511])
def test_wrong_tag_raises_invalid_tag(bit: int) -> None:
    mac_key, ya_share, _ = _session()
    tag = _flip_bit(confirmation_tag(mac_key, ya_share, _G["ADa"]), bit)
    with pytest.raises(InvalidTag, match=r"^confirmation failed$"):
        verify_confirmation_tag(mac_key, ya_share, _G["ADa"], tag)


def test_truncated_tag_raises_invalid_tag() -> None:
    mac_key, ya_share, _ = _session()
    tag = confirmation_tag(mac_key, ya_share, _G["ADa"])
    with pytest.raises(InvalidTag):
        verify_confirmation_tag(mac_key, ya_share, _G["ADa"], tag[:32])


def test_tag_for_other_message_raises_invalid_tag() -> None:
    mac_key, ya_share, yb_share = _session()
    tag_b = confirmation_tag(mac_key, yb_share, _G["ADb"])
    with pytest.raises(InvalidTag):
        verify_confirmation_tag(mac_key, ya_share, _G["ADa"], tag_b)
