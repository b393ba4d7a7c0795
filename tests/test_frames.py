"""The wire format: round trips, header checks before any body byte, incremental decoding."""

from __future__ import annotations

import struct
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certpair.protocol.frames import (
    HEADER_SIZE,
    MAX_BODY,
    VERSION,
    Frame,
    FrameDecoder,
    FrameType,
    ProtocolError,
    encode_frame,
)
from tests.helpers import BODY_BOUNDS

_TYPE_BYTES: Final = {
    FrameType.HMAC_REQUEST: 0x01,
    FrameType.HMAC_RESPONSE: 0x02,
    FrameType.CPACE_SHARE_A: 0x11,
    FrameType.CPACE_SHARE_B: 0x12,
    FrameType.CPACE_CONFIRM_A: 0x13,
    FrameType.COMMITTED: 0x20,
    FrameType.ERROR: 0x7F,
}
_UNKNOWN_TYPES: Final = sorted(set(range(256)) - set(_TYPE_BYTES.values()))


def _header(version: int, type_byte: int, length: int) -> bytes:
    return struct.pack(">BBH", version, type_byte, length)


def _body(frame_type: FrameType, length: int) -> bytes:
    return bytes((frame_type + i) % 256 for i in range(length))


def _sample_frames() -> list[Frame]:
    frames = []
    for frame_type, (low, high) in BODY_BOUNDS.items():
        for length in sorted({low, (low + high) // 2, high}):
            frames.append(Frame(type=frame_type, body=_body(frame_type, length)))
    return frames


def _bad_headers() -> list[tuple[str, bytes]]:
    cases = [
        (f"version-{v}", _header(v, 0x01, 40)) for v in (0, 2, 0x7F, 0xFF) if v != VERSION
    ]
    cases += [(f"type-{t:#04x}", _header(VERSION, t, 40)) for t in _UNKNOWN_TYPES]
    for frame_type, (low, high) in BODY_BOUNDS.items():
        name = frame_type.name.lower()
        cases.append((f"{name}-above-max", _header(VERSION, frame_type, high + 1)))
        if low > 0:
            cases.append((f"{name}-below-min", _header(VERSION, frame_type, low - 1)))
            cases.append((f"{name}-zero", _header(VERSION, frame_type, 0)))
        cases.append((f"{name}-0xffff", _header(VERSION, frame_type, 0xFFFF)))
        cases.append((f"{name}-max-body+1", _header(VERSION, frame_type, MAX_BODY + 1)))
    return cases


_BAD_HEADERS: Final = _bad_headers()


def test_frame_type_values_match_protocol() -> None:
    assert {frame_type: int(frame_type) for frame_type in FrameType} == _TYPE_BYTES
    assert VERSION == 1
    assert HEADER_SIZE == 4


@pytest.mark.parametrize("frame", _sample_frames(), ids=lambda f: f"{f.type.name}-{len(f.body)}")
def test_encode_decode_round_trip_for_every_type(frame: Frame) -> None:
    wire = encode_frame(frame.type, frame.body)
    assert wire == _header(VERSION, _TYPE_BYTES[frame.type], len(frame.body)) + frame.body
    decoder = FrameDecoder()
    assert decoder.feed(wire) == [frame]
    assert decoder.pending == 0


@pytest.mark.parametrize("frame_type", list(FrameType))
def test_encode_refuses_body_outside_type_bounds(frame_type: FrameType) -> None:
    low, high = BODY_BOUNDS[frame_type]
    for length in (0, low - 1, high + 1, MAX_BODY + 1):
        if low <= length <= high or length < 0:
            continue
        with pytest.raises(ValueError, match=frame_type.name):
            encode_frame(frame_type, bytes(length))


@pytest.mark.parametrize(("case", "header"), _BAD_HEADERS, ids=[c for c, _ in _BAD_HEADERS])
def test_bad_header_raises_on_its_fourth_byte(case: str, header: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(header[:3]) == []
    with pytest.raises(ProtocolError):
        decoder.feed(header[3:])


def test_bad_header_raises_even_with_body_bytes_in_same_chunk() -> None:
    for _case, header in _BAD_HEADERS:
        decoder = FrameDecoder()
        with pytest.raises(ProtocolError):
            decoder.feed(header + bytes(40))


@pytest.mark.parametrize("frame_type", list(FrameType))
def test_huge_length_is_refused_from_header_alone(frame_type: FrameType) -> None:
    # Only the 4 header bytes: a decoder that waited for (or reserved) 65535 body
    # bytes before judging the length would return [] here instead of raising.
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="length"):
        decoder.feed(_header(VERSION, frame_type, 0xFFFF))


def test_valid_header_alone_waits_for_body() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(_header(VERSION, FrameType.CPACE_CONFIRM_A, 64)) == []
    assert decoder.pending == HEADER_SIZE
    assert decoder.feed(bytes(63)) == []
    assert decoder.pending == HEADER_SIZE + 63
    assert decoder.feed(bytes(1)) == [Frame(type=FrameType.CPACE_CONFIRM_A, body=bytes(64))]
    assert decoder.pending == 0


def test_byte_at_a_time_feeding_yields_same_frames() -> None:
    frames = _sample_frames()
    wire = b"".join(encode_frame(frame.type, frame.body) for frame in frames)
    decoder = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i : i + 1])
    assert got == frames
    assert FrameDecoder().feed(wire) == frames


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_chunking_yields_same_frames(data: st.DataObject) -> None:
    frames = data.draw(st.lists(st.sampled_from(_sample_frames()), max_size=8))
    wire = b"".join(encode_frame(frame.type, frame.body) for frame in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    decoder = FrameDecoder()
    got: list[Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += decoder.feed(wire[start:end])
    assert got == frames
    assert decoder.pending == 0


def test_empty_feed_returns_nothing() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.pending == 0


@pytest.mark.parametrize(
    "after",
    [b"", encode_frame(FrameType.ERROR, b"\x01"), b"\x01"],
    ids=["empty", "valid-frame", "one-byte"],
)
def test_decoder_refuses_every_call_after_an_error(after: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(_header(2, FrameType.ERROR, 1))
    with pytest.raises(ProtocolError):
        decoder.feed(after)
    with pytest.raises(ProtocolError):
        decoder.feed(after)


def test_frames_before_a_bad_header_in_the_same_chunk_are_not_returned() -> None:
    # The whole chunk fails: nothing from it may be acted on.
    good = encode_frame(FrameType.ERROR, b"\x02")
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(good + _header(VERSION, 0x55, 1))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_arbitrary_bytes_raise_nothing_but_protocol_error(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    try:
        for chunk in chunks:
            decoded += decoder.feed(chunk)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            decoder.feed(b"")
        return
    wire = b"".join(chunks)
    reencoded = b"".join(encode_frame(frame.type, frame.body) for frame in decoded)
    assert wire.startswith(reencoded)
    assert decoder.pending == len(wire) - len(reencoded)
    assert all(len(frame.body) <= MAX_BODY for frame in decoded)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE))
def test_any_header_is_judged_on_arrival(header: bytes) -> None:
    version, type_byte, length = struct.unpack(">BBH", header)
    bounds = BODY_BOUNDS.get(FrameType(type_byte)) if type_byte in _TYPE_BYTES.values() else None
    acceptable = version == VERSION and bounds is not None and bounds[0] <= length <= bounds[1]
    decoder = FrameDecoder()
    if acceptable:
        assert decoder.feed(header) == []
        assert decoder.pending == HEADER_SIZE
    else:
        with pytest.raises(ProtocolError):
            decoder.feed(header)
