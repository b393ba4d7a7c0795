"""Frames as mallory sees them, and what she does with each one: the policies.

A :class:`Policy` sits between the two legs of a man in the middle
(:func:`tests.attacks.mitm.man_in_the_middle`) and decides, frame by frame and per
:class:`Direction`, what to forward: relay, drop, delay, reorder, replay, tamper or
substitute. The frame helpers read and build raw frames without validating anything.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from certpair.protocol.frames import HEADER_SIZE, VERSION

if TYPE_CHECKING:
    from tests.attacks.mitm import Interception

__all__ = [
    "Callbacks",
    "Delay",
    "Direction",
    "Drop",
    "FrameHook",
    "FrameSplitter",
    "Policy",
    "Reorder",
    "Replay",
    "Substitute",
    "Tamper",
    "frame_body",
    "frame_type",
    "raw_frame",
]


class Direction(enum.Enum):
    """Which way a frame travels."""

    TO_OFFERER = "joiner->offerer"
    TO_JOINER = "offerer->joiner"


def frame_type(frame: bytes) -> int:
    """The type byte of a raw frame."""
    return frame[1]


def frame_body(frame: bytes) -> bytes:
    """The body of a raw frame."""
    return frame[HEADER_SIZE:]


def raw_frame(type_byte: int, body: bytes, *, version: int = VERSION) -> bytes:
    """Build a frame without any of the encoder's checks (mallory sends what she likes)."""
    return bytes([version, type_byte]) + len(body).to_bytes(2, "big") + body


class FrameSplitter:
    """Cuts a byte stream into frames using the length field alone, validating nothing."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every whole frame now available (header included)."""
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= HEADER_SIZE:
            end = HEADER_SIZE + int.from_bytes(self._buffer[2:4], "big")
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[:end]))
            del self._buffer[:end]
        return frames

class Policy:
    """What mallory does with each frame. The base class relays everything unchanged."""

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        """Return the frames to forward in ``direction`` instead of ``frame``."""
        del direction, interception
        return (frame,)


def _matches(direction: Direction, frame: bytes, want_dir: Direction | None,
             want_type: int | None) -> bool:
    return (want_dir is None or direction is want_dir) and (
        want_type is None or frame_type(frame) == want_type
    )


# Quoted: mitm imports this module, so Interception is imported for type checking only.
FrameHook = Callable[[bytes, "Interception"], Awaitable[Sequence[bytes]]]


class Callbacks(Policy):
    """One coroutine per direction decides; a missing one relays."""

    def __init__(self, *, to_offerer: FrameHook | None = None,
                 to_joiner: FrameHook | None = None) -> None:
        self.hooks = {Direction.TO_OFFERER: to_offerer, Direction.TO_JOINER: to_joiner}

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        hook = self.hooks[direction]
        return (frame,) if hook is None else await hook(frame, interception)


class Drop(Policy):
    """Swallow matching frames (and keep the connection open: a stall)."""

    def __init__(self, direction: Direction | None = None, frame_type_: int | None = None):
        self.direction, self.frame_type = direction, frame_type_

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        return () if _matches(direction, frame, self.direction, self.frame_type) else (frame,)


class Delay(Policy):
    """Hold matching frames for ``seconds`` before forwarding them."""

    def __init__(self, seconds: float, direction: Direction | None = None) -> None:
        self.seconds, self.direction = seconds, direction

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if _matches(direction, frame, self.direction, None):
            await asyncio.sleep(self.seconds)  # the attack itself, not synchronisation
        return (frame,)


class Tamper(Policy):
    """Rewrite matching frames with ``edit`` (e.g. flip a bit of a tag)."""

    def __init__(self, edit: Callable[[bytes], bytes], direction: Direction | None = None,
                 frame_type_: int | None = None) -> None:
        self.edit, self.direction, self.frame_type = edit, direction, frame_type_

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if _matches(direction, frame, self.direction, self.frame_type):
            return (self.edit(frame),)
        return (frame,)


class Substitute(Policy):
    """Replace matching frames with fixed ones (e.g. recorded in another session)."""

    def __init__(self, replacement: Sequence[bytes], direction: Direction | None = None,
                 frame_type_: int | None = None) -> None:
        self.replacement, self.direction, self.frame_type = replacement, direction, frame_type_

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if _matches(direction, frame, self.direction, self.frame_type):
            return tuple(self.replacement)
        return (frame,)


class Replay(Policy):
    """Forward matching frames and then play them again, ``times`` more times."""

    def __init__(self, times: int = 1, direction: Direction | None = None) -> None:
        self.times, self.direction = times, direction

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if _matches(direction, frame, self.direction, None):
            return (frame,) * (1 + self.times)
        return (frame,)


class Reorder(Policy):
    """Hold the first ``count`` frames of one direction, then release them reversed."""

    def __init__(self, direction: Direction, count: int = 2) -> None:
        self.direction, self.count = direction, count
        self._held: list[bytes] = []

    async def on_frame(
        self, direction: Direction, frame: bytes, interception: Interception
    ) -> Sequence[bytes]:
        if direction is not self.direction or self.count <= 0:
            return (frame,)
        self._held.append(frame)
        if len(self._held) < self.count:
            return ()
        released, self._held, self.count = self._held[::-1], [], 0
        return tuple(released)
