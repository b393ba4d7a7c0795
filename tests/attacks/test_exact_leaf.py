"""Exact-leaf trust after pairing (issue 10 §1): a connection is accepted only when the
certificate the other side presents is itself one stored, usable peer — never a
certificate that some stored one "signed", never a stored certificate that could sign,
and, when a caller pins one device, never another paired device.

The bad certificates are put straight into the store (as an older certpair, or a store
edited by hand, would hold them): the pairing-time profile is tested elsewhere; these
tests are the defence behind it. The attacker's side uses plain ``ssl`` contexts
holding the certificates and keys it made, so nothing of certpair helps it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certpair.identity import create_identity, fingerprint
from certpair.store import open_store
from certpair.trusted import client_context, connect, make_server, server_context
from certpair.trusted.contexts import NotPaired
from tests.attacks.forged_certs import AnyKey, forge_cert, key_usage, p256, write_identity
from tests.trustedutil import asyncio_handshake, handshake

CLI = [sys.executable, "-m", "certpair"]
CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")


def _plant(home: Path, name: str, der: bytes) -> None:
    """Put a certificate into the store as if it had been paired."""
    with open_store(home) as store:
        store.commit_pairing(name=name, cert_der=der, mode="cpace", role="offerer",
                             remote="planted")


def _plant_row(home: Path, name: str, der: bytes) -> None:
    """Put a certificate into the store as a row only, as a store from before the
    profile and the identity index (schema step 7) may hold it."""
    open_store(home).close()
    with sqlite3.connect(home / "trust.db") as db:
        db.execute("INSERT INTO peers (fingerprint, name, cert_der, mode, paired_at)"
                   " VALUES (?, ?, ?, 'cpace', 'then')", (fingerprint(der), name, der))
    open_store(home).close()  # files it in the anchor directory


def _holding(tmp: Path, label: str, chain: list[bytes], key: AnyKey, *,
             server_side: bool) -> ssl.SSLContext:
    """A plain context that presents ``chain`` (leaf first) and checks nothing."""
    pem = b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
                   for d in chain)
    (tmp / f"{label}.pem").write_bytes(pem)
    (tmp / f"{label}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tmp / f"{label}.pem", tmp / f"{label}.key")
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture
def alpha(tmp_path: Path) -> Path:
    home = tmp_path / "alpha"
    create_identity(home, "alpha")
    return home


def _minted_under_a_stored(alpha: Path, *, ca: bool) -> tuple[bytes, bytes, AnyKey]:
    """A certificate stored in alpha's store as a peer's (a CA, or a plain leaf), and a
    leaf minted with its key: (the stored one, the minted one, the minted one's key)."""
    issuer_key = p256()
    issuer = (forge_cert(issuer_key, common_name="mallory-ca", ca=True,
                         usage=key_usage(cert_sign=True)) if ca
              else forge_cert(issuer_key, common_name="paired-leaf"))
    _plant(alpha, "mallory" if ca else "x", issuer)
    minted_key = p256()
    minted = forge_cert(minted_key, common_name="minted", issuer_key=issuer_key,
                        issuer=x509.load_der_x509_certificate(issuer).subject)
    return issuer, minted, minted_key


def _refused_both_ways(alpha: Path, tmp: Path, chain: list[bytes], key: AnyKey) -> None:
    """alpha's server refuses a client presenting ``chain``; alpha's client refuses a
    server presenting it."""
    as_client = handshake(server_context(alpha), _holding(tmp, "c", chain, key,
                                                          server_side=False))
    assert isinstance(as_client.server, ssl.SSLError), as_client
    as_server = handshake(_holding(tmp, "s", chain, key, server_side=True),
                          client_context(alpha))
    assert isinstance(as_server.client, ssl.SSLError), as_server


def test_a_peer_stored_with_a_ca_certificate_cannot_mint_a_leaf_any_context_accepts(
    alpha: Path, tmp_path: Path
) -> None:
    ca, minted, minted_key = _minted_under_a_stored(alpha, ca=True)
    _refused_both_ways(alpha, tmp_path, [minted], minted_key)
    _refused_both_ways(alpha, tmp_path, [minted, ca], minted_key)


def test_an_asyncio_server_on_the_raw_context_never_sees_a_minted_leaf(
    alpha: Path, tmp_path: Path
) -> None:
    # asyncio drives SSLObject.do_handshake itself: the check must sit there too.
    ca, minted, minted_key = _minted_under_a_stored(alpha, ca=True)
    attacker = _holding(tmp_path, "a", [minted, ca], minted_key, server_side=False)
    assert asyncio_handshake(server_context(alpha), attacker) == (b"", False)


def test_a_ca_certificate_in_the_store_is_not_trusted_even_as_itself_and_peers_flags_it(
    alpha: Path, tmp_path: Path
) -> None:
    ca_key = p256()
    ca = forge_cert(ca_key, common_name="mallory-ca", ca=True,
                    usage=key_usage(cert_sign=True))
    _plant(alpha, "mallory", ca)
    _refused_both_ways(alpha, tmp_path, [ca], ca_key)
    # Flagged, not dropped: still listed, with a warning and the reason.
    listed = subprocess.run([*CLI, "--home", str(alpha), "peers"], capture_output=True,
                            text=True, timeout=60, check=True)
    assert "mallory" in listed.stdout
    assert "Warning: mallory is not trusted" in listed.stderr
    assert "CA:TRUE" in listed.stderr
    as_json = subprocess.run([*CLI, "--home", str(alpha), "peers", "--json"],
                             capture_output=True, text=True, timeout=60, check=True)
    (row,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert row["name"] == "mallory" and "CA:TRUE" in row["flagged"]


def test_a_leaf_signed_by_a_stored_non_ca_certificate_is_refused(
    alpha: Path, tmp_path: Path
) -> None:
    issuer, minted, minted_key = _minted_under_a_stored(alpha, ca=False)
    _refused_both_ways(alpha, tmp_path, [minted], minted_key)
    _refused_both_ways(alpha, tmp_path, [minted, issuer], minted_key)


def test_a_client_context_pinned_to_one_device_refuses_another_paired_device(
    tmp_path: Path,
) -> None:
    ids = {n: create_identity(tmp_path / n, n) for n in ("alpha", "beta", "gamma")}
    for server in ("beta", "gamma"):
        _plant(tmp_path / "alpha", server, ids[server].cert_der)
        _plant(tmp_path / server, "alpha", ids["alpha"].cert_der)
    pinned = client_context(tmp_path / "alpha", peer="beta")
    assert handshake(server_context(tmp_path / "beta"), pinned).ok
    wrong = handshake(server_context(tmp_path / "gamma"), pinned)
    assert isinstance(wrong.client, ssl.SSLCertVerificationError)
    # The helpers take the pin too, with or without a context of the caller's.
    with make_server(lambda tls, peer: tls.sendall(b"x"), "127.0.0.1", 0,
                     tmp_path / "gamma") as gamma:
        threading.Thread(target=gamma.serve_forever, daemon=True).start()
        port = gamma.server_address[1]
        with pytest.raises(NotPaired):
            connect("127.0.0.1", port, tmp_path / "alpha", peer="beta")
        with pytest.raises(NotPaired):
            connect("127.0.0.1", port, tmp_path / "alpha", peer="beta",
                    context=client_context(tmp_path / "alpha"))
        tls, peer = connect("127.0.0.1", port, tmp_path / "alpha", peer="gamma")
        tls.close()
        assert peer.name == "gamma"
        gamma.shutdown()


# -- export + curl: a paired device posing under another's name ---------------------------


class _Serve:
    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "--home", str(home), "serve", "--json", "--listen", "127.0.0.1",
             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[dict[str, object]]:
    """alpha paired with beta and with x; x's certificate carries beta's DNS name."""
    ids = {n: create_identity(tmp_path / n, n) for n in ("alpha", "beta", "x")}
    beta_dns = x509.load_der_x509_certificate(ids["beta"].cert_der).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName)[0]
    x_key = p256()
    x_cert = forge_cert(x_key, common_name="x", dns=[beta_dns])
    write_identity(tmp_path / "x", x_cert, x_key)
    _plant(tmp_path / "alpha", "beta", ids["beta"].cert_der)
    _plant_row(tmp_path / "alpha", "x", x_cert)
    for home in ("beta", "x"):
        _plant(tmp_path / home, "alpha", ids["alpha"].cert_der)
    servers = {n: _Serve(tmp_path / n) for n in ("beta", "x")}
    yield {"root": tmp_path, "servers": servers}
    for server in servers.values():
        server.stop()


def _recipe(root: Path, port: int) -> dict[str, str]:
    out = subprocess.run([*CLI, "--home", str(root / "alpha"), "export", "--peer", "beta",
                          "--out", str(root / "export"), "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    recipes: dict[str, str] = json.loads(out.stdout)["recipes"]
    return {tool: line.replace("ADDRESS", "127.0.0.1").replace(":4491", f":{port}")
            for tool, line in recipes.items()}


@pytest.mark.skipif(CURL is None, reason="needs the curl binary")
def test_the_pinned_curl_recipe_refuses_a_paired_device_that_carries_beta_s_name(
    impostor: dict[str, object],
) -> None:
    root = impostor["root"]
    servers = impostor["servers"]
    assert isinstance(root, Path) and isinstance(servers, dict)
    env = {**os.environ, "LC_ALL": "C"}
    honest = _recipe(root, servers["beta"].port)["curl"]
    ok = subprocess.run([*shlex.split(honest), "-sS", "--max-time", "20"],
                        capture_output=True, text=True, timeout=30, env=env, check=False)
    assert ok.returncode == 0 and json.loads(ok.stdout)["name"] == "beta", ok.stderr
    posing = _recipe(root, servers["x"].port)["curl"]
    refused = subprocess.run([*shlex.split(posing), "-sS", "--max-time", "20"],
                             capture_output=True, text=True, timeout=30, env=env, check=False)
    assert refused.returncode != 0 and refused.stdout == "", refused.stdout


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl binary")
def test_the_openssl_recipe_confirms_beta_and_not_a_paired_device_posing_as_beta(
    impostor: dict[str, object],
) -> None:
    root = impostor["root"]
    servers = impostor["servers"]
    assert isinstance(root, Path) and isinstance(servers, dict)
    honest = _recipe(root, servers["beta"].port)["openssl"]
    ok = subprocess.run(["sh", "-c", honest], capture_output=True, text=True, timeout=60,
                        check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("sha256:"), (ok.stdout, ok.stderr)
    posing = _recipe(root, servers["x"].port)["openssl"]
    refused = subprocess.run(["sh", "-c", posing], capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode != 0 and refused.stdout == ""
