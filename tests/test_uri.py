"""certpair:// URIs and their QR codes: exact round trips, strict refusals, the CLI's exit
status, and real ``pair --qr`` / ``join URI`` processes on loopback."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certpair.codes import Mode, generate_code, generate_hmac_key, parse_secret
from certpair.errors import BadInput
from certpair.uri import (
    DEFAULT_URI_PORT,
    MalformedURI,
    format_uri,
    looks_like_uri,
    parse_uri,
    valid_host,
)
from tests.cliutil import (
    LOOPBACK,
    Offerer,
    Proc,
    cert_fingerprint,
    certpair_argv,
    events,
    init,
    peers,
    run,
)

FP = "sha256:" + "0123456789abcdef" * 4
CODE = "1234-5678-6"

hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}",
                  fullmatch=True),
)


@given(host=hosts, port=st.integers(1, 65535), digits=st.integers(6, 12),
       bits=st.integers(64, 160), hmac=st.booleans(), with_fp=st.booleans(),
       fp_hex=st.binary(min_size=32, max_size=32))
def test_format_then_parse_gives_back_host_port_secret_and_fingerprint(
    host: str, port: int, digits: int, bits: int, hmac: bool, with_fp: bool, fp_hex: bytes
) -> None:
    secret = generate_hmac_key(bits) if hmac else generate_code(digits)
    fingerprint = "sha256:" + fp_hex.hex() if with_fp else None
    uri = format_uri(host=host, port=port, secret=secret, fingerprint=fingerprint)
    parsed = parse_uri(uri)
    assert parsed.host == host
    assert parsed.port == port
    assert parsed.secret == secret
    assert parsed.fingerprint == fingerprint
    assert format_uri(host=parsed.host, port=parsed.port, secret=parsed.secret,
                      fingerprint=parsed.fingerprint) == uri


def test_uri_has_the_documented_shape() -> None:
    uri = format_uri(host="192.168.1.20", port=4490, secret=parse_secret(CODE), fingerprint=FP)
    short = base64.urlsafe_b64encode(bytes.fromhex(FP[7:])).decode().rstrip("=")
    assert uri == f"certpair://192.168.1.20:4490/?code={CODE}&fp={short}"
    assert len(short) == 43
    # the long form stays readable: URIs printed by earlier versions still join
    assert parse_uri(f"certpair://192.168.1.20:4490/?code={CODE}&fp={FP}").fingerprint == FP
    v6 = format_uri(host="fe80::1", port=1, secret=parse_secret(CODE), fingerprint=None)
    assert v6 == f"certpair://[fe80::1]:1/?code={CODE}"


@pytest.mark.parametrize(
    ("text", "host", "port", "fingerprint"),
    [
        (f"certpair://h.local/?code={CODE}", "h.local", DEFAULT_URI_PORT, None),
        (f"certpair://10.0.0.1:5?code=12345678-6&fp={FP}", "10.0.0.1", 5, FP),
        (f"CERTPAIR://10.0.0.1:5/?fp={FP.upper().replace('SHA256', 'sha256')}&code={CODE}",
         "10.0.0.1", 5, FP),
        (f"certpair://10.0.0.1:5/?code={CODE}&fp=sha256%3A{FP[7:]}", "10.0.0.1", 5, FP),
        (f"  certpair://[::1]:9/?code={CODE}\n", "::1", 9, None),
    ],
)
def test_accepted_variants_parse_to_the_same_meaning(
    text: str, host: str, port: int, fingerprint: str | None
) -> None:
    parsed = parse_uri(text)
    assert (parsed.host, parsed.port, parsed.fingerprint) == (host, port, fingerprint)
    assert parsed.secret.mode is Mode.CPACE


def test_hmac_key_in_a_uri_keeps_its_full_strength() -> None:
    key = generate_hmac_key(128)
    parsed = parse_uri(format_uri(host="h", port=1, secret=key, fingerprint=None))
    assert parsed.secret.mode is Mode.HMAC and parsed.secret.bits >= 128
    assert parsed.secret.value == key.value


MALFORMED = [
    "",
    "certpair:",
    "certpair://",
    f"http://10.0.0.1:1/?code={CODE}",
    f"certpair:10.0.0.1:1/?code={CODE}",
    f"certpair:///?code={CODE}",
    f"certpair://user@10.0.0.1:1/?code={CODE}",
    f"certpair://10.0.0.1:0/?code={CODE}",
    f"certpair://10.0.0.1:65536/?code={CODE}",
    f"certpair://10.0.0.1:123456/?code={CODE}",
    f"certpair://10.0.0.1:/?code={CODE}",
    f"certpair://10.0.0.1:x/?code={CODE}",
    f"certpair://999.0.0.1:1/?code={CODE}",
    f"certpair://[::g]:1/?code={CODE}",
    f"certpair://[fe80::1%25eth0]:1/?code={CODE}",
    f"certpair://-bad-.local:1/?code={CODE}",
    f"certpair://a..b:1/?code={CODE}",
    f"certpair://h%41:1/?code={CODE}",
    f"certpair://h:1/path?code={CODE}",
    f"certpair://h:1/?code={CODE}#frag",
    "certpair://h:1/",
    "certpair://h:1/?",
    "certpair://h:1/?fp=" + FP,
    f"certpair://h:1/?code={CODE}&code={CODE}",
    f"certpair://h:1/?code={CODE}&fp={FP}&fp={FP}",
    f"certpair://h:1/?code={CODE}&x=1",
    f"certpair://h:1/?code={CODE}&&fp={FP}",
    "certpair://h:1/?code=",
    "certpair://h:1/?code=1234-5678-7",  # wrong check digit
    "certpair://h:1/?code=12345",  # too short
    f"certpair://h:1/?code={CODE}&fp=sha256:abc",
    f"certpair://h:1/?code={CODE}&fp=md5:{FP[7:]}",
    f"certpair://h:1/?code={CODE}&fp={FP}00",
    f"certpair://h:1/?code={CODE}&fp={FP[:-1]}g",
    f"certpair://h:1/?code={CODE}%zz",
    "certpair://h:1/?code=1234 5678-6",
    f"certpair://h:1/?code=\t{CODE}",
    f"certpair://h 1/?code={CODE}",
    "certpair://h:1/?code=1234%2D5678%2D6%00",
    f"certpair://{'a' * 64}:1/?code={CODE}",
    f"certpair://h:1/?code={CODE}&fp={'0' * 2000}",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_uri_is_refused_as_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        parse_uri(text)


def test_malformed_uri_error_is_the_uri_kind_unless_only_the_code_is_bad() -> None:
    with pytest.raises(MalformedURI):
        parse_uri(f"certpair://h:1/?code={CODE}&x=1")
    with pytest.raises(BadInput, match="check digit"):
        parse_uri("certpair://h:1/?code=1234-5678-7")


def test_error_messages_never_repeat_the_secret() -> None:
    for text in (f"certpair://h:1/?code={CODE}&x=1", f"certpair://h:1/path?code={CODE}"):
        with pytest.raises(BadInput) as info:
            parse_uri(text)
        assert CODE not in str(info.value) and "12345678" not in str(info.value)


def test_secrets_and_hosts_are_not_taken_for_uris() -> None:
    assert not looks_like_uri(CODE)
    assert not looks_like_uri("192.168.1.20:4490")
    assert not looks_like_uri("[fe80::1]:4490")
    assert looks_like_uri("certpair://h/?code=1")
    assert looks_like_uri("CertPair:whatever")
    assert looks_like_uri("https://example.invalid/")


@pytest.mark.parametrize(
    "args",
    [
        ["join", "certpair://127.0.0.1:1/?code=1234-5678-7"],
        ["join", f"certpair://127.0.0.1:1/?code={CODE}&fp=sha256:00"],
        ["join", f"certpair://127.0.0.1:1/?code={CODE}&unknown=1"],
        ["join", f"http://127.0.0.1:1/?code={CODE}"],
        ["join", f"certpair://127.0.0.1:1/?code={CODE}", CODE],
        ["join", "127.0.0.1", f"certpair://127.0.0.1:1/?code={CODE}"],
    ],
)
def test_cli_refuses_malformed_uri_with_exit_2_before_any_connection(
    tmp_path: Path, args: list[str]
) -> None:
    home = tmp_path / "b"
    init(home, "beta")
    result = run(home, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert not (home / "trust.db").exists() or _no_events(home)


def _no_events(home: Path) -> bool:
    import sqlite3

    with sqlite3.connect(home / "trust.db") as db:
        row: tuple[int] = db.execute("SELECT count(*) FROM events").fetchone()
    return row == (0,)


# ------------------------------------------------ from pair --qr to join, real processes

@pytest.mark.parametrize("mode", ["cpace", "hmac"])
def test_uri_from_pair_qr_carries_everything_needed_and_pairs(
    homes: tuple[Path, Path], offerers: list[Proc], mode: str
) -> None:
    a, b = homes
    offerer = Offerer(a, "--mode", mode, "--qr", advertise=False)
    offerers.append(offerer)
    uri = parse_uri(offerer.listening["uri"])
    assert (uri.host, uri.port) == (LOOPBACK, offerer.listening["port"])
    assert uri.fingerprint == cert_fingerprint(a)
    assert uri.secret == parse_secret(offerer.code)
    if mode == "hmac":
        assert uri.secret.mode is Mode.HMAC and uri.secret.bits >= 80
    joined = run(b, "join", offerer.listening["uri"])
    assert joined.returncode == 0, joined.stderr
    assert offerer.finish()[0] == 0
    assert [p["fingerprint"] for p in peers(b)] == [cert_fingerprint(a)]


def test_uri_whose_fingerprint_does_not_match_exits_1_and_stores_nothing(
    homes: tuple[Path, Path], offerers: list[Proc]
) -> None:
    a, b = homes
    offerer = Offerer(a, "--once", "--qr", advertise=False)
    offerers.append(offerer)
    good = parse_uri(offerer.listening["uri"])
    forged = format_uri(host=good.host, port=good.port, secret=good.secret,
                        fingerprint=cert_fingerprint(b))
    result = run(b, "join", forged)
    assert result.returncode == 1
    assert result.stderr == ("Error: pairing failed: the offerer's certificate does not match "
                             "the expected fingerprint\n")
    assert peers(b) == [] and peers(a) == []
    assert events(b) == [("failed", "certificate mismatch")]
    # No proof was sent, so the --once offer is still open and the same code works.
    assert offerer.proc.poll() is None
    assert ("failed", "pairing failed") not in events(a)
    assert run(b, "join", offerer.listening["uri"]).returncode == 0
    assert offerer.finish()[0] == 0


def _decode_terminal_qr(lines: list[str]) -> list[list[int]]:
    """Compact terminal QR -> module matrix (1 = dark); two rows per text line."""
    upper = {"█": 0, "▀": 0, "▄": 1, " ": 1}
    lower = {"█": 0, "▀": 1, "▄": 0, " ": 1}
    rows: list[list[int]] = []
    for line in lines:
        rows.append([upper[ch] for ch in line])
        rows.append([lower[ch] for ch in line])
    return rows


def _matrix(uri: str, border: int, error: str = "l") -> list[list[int]]:
    import segno

    qr = segno.make(uri, error=error, micro=False)
    size = len(qr.matrix) + 2 * border
    rows = [[0] * size for _ in range(size)]
    for y, row in enumerate(qr.matrix):
        for x, bit in enumerate(row):
            rows[y + border][x + border] = bit
    return rows


def test_terminal_qr_encodes_the_uri_and_fits_80x24_above_the_code(
        homes: tuple[Path, Path], offerers: list[Proc]) -> None:
    a, _ = homes
    proc = Proc(certpair_argv(a, "pair", "--listen", LOOPBACK, "--port", "0", "--qr",
                              "--no-advertise"))
    offerers.append(proc)
    block: list[str] = []
    while not (line := proc.next_line()).startswith("Pairing code: "):
        block.append(line.rstrip("\n"))
    code, port = line.split()[2], int(line.rsplit(":", 1)[1])
    assert proc.next_line().startswith("On the other device: certpair join ")
    uri = format_uri(host=LOOPBACK, port=port, secret=parse_secret(code),
                     fingerprint=cert_fingerprint(a))
    decoded = _decode_terminal_qr(block)
    expected = _matrix(uri, border=2)
    assert decoded[: len(expected)] == expected
    assert len(decoded) - len(expected) in (0, 1)  # an odd size leaves half a text line
    # 80x24: the QR code, the code line, the join line and the countdown line
    assert len(block) + 3 <= 24 and max(len(row) for row in block) <= 80


def _decode_png(data: bytes) -> list[list[int]]:
    """A 1-bit greyscale, non-interlaced PNG -> pixel rows (1 = dark)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos: pos + 4])
        kind, body = data[pos + 4: pos + 8], data[pos + 8: pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, interlace) == (1, 0, 0)
    raw, stride, rows = zlib.decompress(idat), (width + 7) // 8, []
    previous = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:
                                                          (y + 1) * (stride + 1)])
        assert kind in (0, 1, 2), kind  # none, sub, up (RFC 2083 6.2-6.4)
        for i in range(stride):
            if kind == 1 and i:
                line[i] = (line[i] + line[i - 1]) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + previous[i]) & 0xFF
        previous = bytes(line)
        rows.append([1 - ((line[x // 8] >> (7 - x % 8)) & 1) for x in range(width)])
    return rows


def test_qr_png_encodes_the_uri(tmp_path: Path, homes: tuple[Path, Path],
                                offerers: list[Proc]) -> None:
    a, _ = homes
    png = tmp_path / "pair.png"
    offerer = Offerer(a, "--qr-png", str(png), advertise=False)
    offerers.append(offerer)
    uri = offerer.listening["uri"]
    assert parse_uri(uri).fingerprint == cert_fingerprint(a)
    pixels = _decode_png(png.read_bytes())
    modules = [row[::8] for row in pixels[::8]]  # scale 8
    assert modules == _matrix(uri, border=4, error="m")


@pytest.mark.parametrize(("host", "ok"), [("10.0.0.1", True), ("fe80::1", True),
                                          ("alpha.local", True), ("my_host", False),
                                          ("", False), ("fe80::1%eth0", False)])
def test_valid_host_says_what_a_uri_can_carry(host: str, ok: bool) -> None:
    assert valid_host(host) is ok
