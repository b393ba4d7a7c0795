"""atheris harness: the frame decoder and both pairing state machines on arbitrary bytes.

Each input picks a target and is cut into chunks that are fed in order:

* ``FrameDecoder.feed`` may return frames or raise ``ProtocolError``; after an error
  it must keep refusing. Anything else raised is a crash.
* ``JoinerSession`` / ``OffererSession`` in cpace and hmac mode, optionally after the
  first honest frame of the protocol vectors (so the fuzzer starts deep in the
  conversation). ``receive_data`` must never raise; it may only return ``Failed``,
  or ``Paired`` when the bytes fed really were the honest run's proof. An offer must
  never stay claimed once its session has ended.

Run through ``scripts/fuzz`` (bounded time, prints the number of executions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from certpair.codes import Mode, Secret, parse_secret
    from certpair.protocol.events import Channel, Failed, Paired
    from certpair.protocol.frames import (
        MAX_BODY,
        FrameDecoder,
        FrameType,
        ProtocolError,
        encode_frame,
    )
    from certpair.protocol.offer import Offer, OfferState
    from certpair.protocol.session import JoinerSession, OffererSession

_VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"
_CPACE = json.loads((_VECTORS / "cpace_vector.json").read_text())
_HMAC = json.loads((_VECTORS / "hmac_vector.json").read_text())


def _hex(vector: dict[str, str], key: str) -> bytes:
    return bytes.fromhex(vector[key])


CHANNEL = Channel(
    cert_offerer=_hex(_CPACE, "cert_offerer_der_hex"),
    cert_joiner=_hex(_CPACE, "cert_joiner_der_hex"),
    exporter=_hex(_CPACE, "exporter_hex"),
)
CPACE_SECRET = parse_secret(_CPACE["code"])
HMAC_SECRET = Secret(mode=Mode.HMAC, value=_hex(_HMAC, "key_hex"), display="vector", bits=80.0)
SCALAR_J = _hex(_CPACE, "scalar_joiner_hex")
SCALAR_O = _hex(_CPACE, "scalar_offerer_hex")
NAME_J, NAME_O = _CPACE["name_joiner"], _CPACE["name_offerer"]

# What each side receives in the honest run of the vectors, frame by frame.
HONEST_TO_OFFERER = {
    Mode.CPACE: [_hex(_CPACE, "frame_share_a_hex"), _hex(_CPACE, "frame_confirm_a_hex")],
    Mode.HMAC: [encode_frame(FrameType.HMAC_REQUEST, _hex(_HMAC, "m1_hex") + NAME_J.encode())],
}
HONEST_TO_JOINER = {
    Mode.CPACE: [_hex(_CPACE, "frame_share_b_hex")],
    Mode.HMAC: [encode_frame(FrameType.HMAC_RESPONSE, _hex(_HMAC, "m2_hex") + NAME_O.encode())],
}


def _holds_the_proof(mode: Mode, honest: list[bytes], fed: bytes) -> bool:
    """Whether the bytes fed carry the honest run's proof (the only way to Paired)."""
    if mode is Mode.HMAC:
        # m1 / m2 cover the certificates, not the name that follows them.
        return fed[:2] == honest[0][:2] and fed[4:36] == honest[0][4:36]
    return fed.startswith(b"".join(honest))


SECRETS = {Mode.CPACE: CPACE_SECRET, Mode.HMAC: HMAC_SECRET}


class Crash(Exception):
    """An invariant broke."""


def _chunks(fdp: atheris.FuzzedDataProvider) -> list[bytes]:
    chunks = []
    while fdp.remaining_bytes() > 0 and len(chunks) < 16:
        size = fdp.ConsumeIntInRange(0, 300)
        chunks.append(fdp.ConsumeBytes(size))
    return chunks


def _fuzz_decoder(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except ProtocolError:
            try:
                decoder.feed(b"\x01")
            except ProtocolError:
                return
            raise Crash("the decoder took input after a protocol error") from None
        for frame in frames:
            if len(frame.body) > MAX_BODY:
                raise Crash("a frame body beyond the cap")


def _fuzz_session(mode: Mode, offerer: bool, prefix: int, chunks: list[bytes]) -> None:
    honest = (HONEST_TO_OFFERER if offerer else HONEST_TO_JOINER)[mode]
    offer = Offer(secret=SECRETS[mode], expires_at=1e9)
    session: JoinerSession | OffererSession
    if offerer:
        session = OffererSession(offer=offer, channel=CHANNEL, name=NAME_O, scalar=SCALAR_O)
    else:
        session = JoinerSession(secret=SECRETS[mode], channel=CHANNEL, name=NAME_J,
                                scalar=SCALAR_J)
        session.start()
    fed = b""
    for chunk in [*honest[:prefix], *chunks]:
        if session.finished:
            break
        fed += chunk
        if isinstance(session, OffererSession):
            events = session.receive_data(chunk, now=0.0)
        else:
            events = session.receive_data(chunk)
        session.data_to_send()
        for event in events:
            if isinstance(event, Paired):
                if not _holds_the_proof(mode, honest, fed):
                    raise Crash(f"Paired without the valid proof after {fed.hex()}")
            elif not isinstance(event, Failed):
                raise Crash(f"unexpected event {event!r}")
    if offerer and session.finished and offer.state is OfferState.CLAIMED:
        raise Crash("the offer stayed claimed after its session ended")


def test_one_input(data: bytes) -> None:
    """One fuzz input: pick a target, cut the rest into chunks, feed them."""
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 4)
    prefix = fdp.ConsumeIntInRange(0, 1)
    chunks = _chunks(fdp)
    if target == 0:
        _fuzz_decoder(chunks)
        return
    mode = Mode.CPACE if target in (1, 2) else Mode.HMAC
    offerer = target in (2, 4)
    # Only the cpace offerer has more than one frame to receive; a prefix elsewhere
    # would be the whole honest run.
    usable_prefix = prefix if (mode is Mode.CPACE and offerer) else 0
    _fuzz_session(mode, offerer, usable_prefix, chunks)


def main() -> None:
    """Hand control to libFuzzer (``-max_total_time`` etc. come from the command line)."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
