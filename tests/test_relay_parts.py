"""The relay's parts without a network: addresses, tokens (and their published
vectors), the nameplate in codes and URIs, and the CLI's `--relay` at the edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from certpair.codes import (
    MalformedSecret,
    Mode,
    WrongCheckCharacter,
    damm_check_digit,
    generate_code,
    generate_hmac_key,
    generate_nameplate,
    parse_secret,
    with_nameplate,
)
from certpair.errors import BadInput
from certpair.relay import (
    RelayAddress,
    pairing_token,
    parse_relay,
    relay_from_env,
    service_token,
)
from certpair.relay.address import handshake_line
from certpair.uri import MalformedURI, format_uri, parse_uri
from tests.cliutil import run

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("text", "host", "port"), [
    ("tcp:relay.example:4001", "relay.example", 4001),
    ("tcp:10.0.0.1:4001", "10.0.0.1", 4001),
    ("tcp:[::1]:4001", "::1", 4001),
    (" tcp:Relay-1.example:65535 ", "Relay-1.example", 65535),
])
def test_relay_addresses_parse_and_print_back(text: str, host: str, port: int) -> None:
    relay = parse_relay(text)
    assert relay == RelayAddress(host=host, port=port)
    assert parse_relay(str(relay)) == relay


@pytest.mark.parametrize("text", [
    "relay.example:4001", "tcp:relay.example", "tcp:relay.example:0", "tcp:relay.example:70000",
    "udp:relay.example:4001", "tcp:[::1%eth0]:4001", "tcp:999.1.1.1:4001", "tcp:-bad-:4001",
    "tcp:a b:4001", "tcp:relay.example:4001/x",
])
def test_malformed_relay_addresses_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        parse_relay(text)


def test_the_environment_setting_is_read_and_an_empty_one_is_none() -> None:
    assert relay_from_env({}) is None
    assert relay_from_env({"CERTPAIR_RELAY": " "}) is None
    assert relay_from_env({"CERTPAIR_RELAY": "tcp:r.example:4001"}) == RelayAddress(
        host="r.example", port=4001)
    with pytest.raises(BadInput, match="CERTPAIR_RELAY"):
        relay_from_env({"CERTPAIR_RELAY": "r.example"})


def test_the_protocol_doc_publishes_the_tokens_the_code_computes() -> None:
    doc = "".join((ROOT / "docs" / "PROTOCOL.md").read_text().split())
    assert pairing_token("12340") in doc
    assert service_token("sha256:" + "ab" * 32, "serve", 0) in doc
    line = handshake_line(pairing_token("12340"), "0000000000000002")
    assert line == f"please relay {pairing_token('12340')} for side 0000000000000002\n".encode()
    with pytest.raises(ValueError, match="64 hex"):
        handshake_line("ab", "0000000000000002")


def test_service_tokens_differ_by_device_service_and_slot() -> None:
    fp = "sha256:" + "ab" * 32
    tokens = {service_token(fp, "serve", 0), service_token(fp, "serve", 1),
              service_token(fp, "tunnel", 0), service_token("sha256:" + "cd" * 32, "serve", 0)}
    assert len(tokens) == 4


@pytest.mark.parametrize("mode", [Mode.CPACE, Mode.HMAC])
def test_a_secret_with_a_nameplate_parses_back_to_the_same_secret(mode: Mode) -> None:
    secret = generate_code() if mode is Mode.CPACE else generate_hmac_key()
    nameplate = generate_nameplate()
    assert len(nameplate) == 5 and damm_check_digit(nameplate) == 0
    met = with_nameplate(secret, nameplate)
    assert met.display == f"{nameplate}+{secret.display}"
    again = parse_secret(met.display)
    assert (again.mode, again.value, again.nameplate) == (mode, secret.value, nameplate)
    assert parse_secret(f" {nameplate[:2]}-{nameplate[2:]} + {secret.display.lower()}") == again


def test_nameplates_are_drawn_apart_from_the_secret() -> None:
    draws = iter([1, 2, 3, 4])
    assert generate_nameplate(randbelow=lambda n: next(draws)) == "1234" + str(
        damm_check_digit("1234"))


@pytest.mark.parametrize(("text", "error"), [
    ("1234+4711-0815-0", MalformedSecret),        # a nameplate is 5 digits
    ("12341+4711-0815-0", WrongCheckCharacter),   # its own check digit catches typos
    ("12340+4711-0815-4", WrongCheckCharacter),   # the code's check digit is intact
    ("12340+12340+4711-0815-0", MalformedSecret),
    ("12340+", MalformedSecret),
    ("1234A+4711-0815-0", MalformedSecret),
])
def test_a_wrong_nameplate_or_code_is_refused_before_any_connection(
    text: str, error: type[Exception],
) -> None:
    with pytest.raises(error):
        parse_secret(text)


def test_a_code_without_a_plus_is_parsed_exactly_as_before() -> None:
    code = parse_secret("4711-0815-0")
    assert code.nameplate is None and code.display == "4711-0815-0"


def test_the_uri_carries_the_relay_and_the_nameplate() -> None:
    secret = with_nameplate(generate_code(), "12340")
    relay = parse_relay("tcp:[2001:db8::1]:4001")
    uri = format_uri(host="192.0.2.1", port=47820, secret=secret, fingerprint=None, relay=relay)
    assert "relay=tcp:%5B2001:db8::1%5D:4001" in uri and "nameplate=12340" in uri
    parsed = parse_uri(uri)
    assert (parsed.relay, parsed.secret) == (relay, secret)
    with pytest.raises(MalformedURI, match="no nameplate"):
        parse_uri(uri.replace("&nameplate=12340", ""))
    with pytest.raises(WrongCheckCharacter):
        parse_uri(uri.replace("nameplate=12340", "nameplate=12341"))


def test_join_refuses_a_relay_code_without_a_relay_and_a_malformed_relay(
    homes: tuple[Path, Path],
) -> None:
    _, b = homes
    result = run(b, "join", "12340+4711-0815-0")
    assert result.returncode == 2
    assert "meets at a relay" in result.stderr and "4711" not in result.stderr
    bad = run(b, "join", "--relay", "relay.example", "12340+4711-0815-0")
    assert bad.returncode == 2 and "tcp:HOST:PORT" in bad.stderr
    import os
    import subprocess

    from tests.cliutil import certpair_argv

    env = {**os.environ, "CERTPAIR_RELAY": "nonsense"}
    from_env = subprocess.run(certpair_argv(b, "join", "12340+4711-0815-0"), env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    assert from_env.returncode == 2 and "CERTPAIR_RELAY" in from_env.stderr
