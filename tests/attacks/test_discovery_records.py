"""Hostile DNS-SD advertisements: one without a (well-formed) fingerprint is dropped, and
two with the same instance name but different fingerprints stay two candidates, so join
refuses to choose (issue 10 §3)."""

from __future__ import annotations

import socket

import pytest
from zeroconf.asyncio import AsyncServiceInfo

from certpair.codes import Mode
from certpair.discovery import (
    SERVICE_TYPE,
    AmbiguousOfferers,
    DiscoveredOfferer,
    _forget,
    _offerer,
    _remember,
    advertisement_properties,
    choose_offerer,
)

FP_A = "sha256:" + "ab" * 32
FP_B = "sha256:" + "cd" * 32


def _info(properties: dict[str, str], *, instance: str = "alpha",
          host: str = "10.0.0.1") -> AsyncServiceInfo:
    return AsyncServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=4490,
                            properties=properties, addresses=[socket.inet_aton(host)])


def test_an_advertisement_with_a_fingerprint_is_read() -> None:
    props = advertisement_properties(name="alpha", mode=Mode.CPACE, fingerprint=FP_A)
    offerer = _offerer(_info(props))
    assert offerer is not None and offerer.fingerprint == FP_A


@pytest.mark.parametrize("fp", [None, "", "sha256:" + "AB" * 32, "sha256:abc",
                                "md5:" + "ab" * 16, FP_A + "0"])
def test_an_advertisement_without_a_wellformed_fingerprint_is_dropped(fp: str | None) -> None:
    props = advertisement_properties(name="alpha", mode=Mode.CPACE, fingerprint=FP_A)
    if fp is None:
        del props["fp"]
    else:
        props["fp"] = fp
    assert _offerer(_info(props)) is None


def _read(fp: str, host: str) -> DiscoveredOfferer:
    props = advertisement_properties(name="alpha", mode=Mode.CPACE, fingerprint=fp)
    offerer = _offerer(_info(props, host=host))
    assert offerer is not None
    return offerer


def test_same_instance_name_with_two_fingerprints_is_two_candidates() -> None:
    found: dict[tuple[str, str | None], DiscoveredOfferer] = {}
    service = f"alpha.{SERVICE_TYPE}"
    _remember(found, service, _read(FP_A, "10.0.0.1"))
    _remember(found, service, _read(FP_B, "10.0.0.2"))  # an impostor under the same name
    assert sorted(o.fingerprint or "" for o in found.values()) == [FP_A, FP_B]
    with pytest.raises(AmbiguousOfferers) as info:
        choose_offerer(list(found.values()), mode=Mode.CPACE, peer_name=None, waited=1)
    assert {o.fingerprint for o in info.value.candidates} == {FP_A, FP_B}
    with pytest.raises(AmbiguousOfferers, match="impostor"):
        choose_offerer(list(found.values()), mode=Mode.CPACE, peer_name="alpha", waited=1)
    # A re-announcement with the same fingerprint replaces; a goodbye removes both.
    _remember(found, service, _read(FP_A, "10.0.0.3"))
    assert len(found) == 2
    _forget(found, service)
    assert found == {}
