"""``certpair export``: this device's certificate and its peers as PEM, for other tools.

Writes ``cert.pem`` (this device) and ``peers.pem`` (every paired device, or one) and
points to the private key where it lies; the key is never copied. With them,
``curl --cert --key --cacert`` and ``openssl s_client``/``s_server -cert -key -CAfile
-verify_return_error`` talk to paired certpair devices (recipes: docs/TRUST.md). With
``--peer`` the printed recipes pin that one device (curl ``--pinnedpubkey``, openssl
by fingerprint). Peer-chosen text is escaped; suggested commands are shell-quoted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import emit_json, find_peer, home_of, identity_of, store_of
from certpair.cli.terminal import host_name_or, printable, shell_command
from certpair.errors import LocalStateError, PairingFailed, counted
from certpair.ports import SERVE_PORT

if TYPE_CHECKING:
    from certpair.store import Peer

__all__ = ["command"]


def _dns_names(cert_der: bytes) -> list[str]:
    """The certificate's DNS names; ``curl`` checks the server's against the URL."""
    from cryptography import x509  # noqa: PLC0415  # keeps start-up fast

    try:
        san = x509.load_der_x509_certificate(cert_der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [str(name) for name in san.value.get_values_for_type(x509.DNSName)]


def _pinned_pubkey(cert_der: bytes) -> str:
    """curl's ``--pinnedpubkey`` value: SHA-256 of the SubjectPublicKeyInfo, base64."""
    import base64  # noqa: PLC0415  # keeps start-up fast
    import hashlib  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    spki = x509.load_der_x509_certificate(cert_der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def _prepare(out_dir: Path) -> None:
    """Create ``out_dir`` 0700 (whatever the umask), or check that nobody else can write
    in an existing one: whoever can could swap the bundle other tools trust.

    Raises:
        InsecurePath: the directory is writable by group or others, or not this user's.
        OSError: it cannot be created.
    """
    from certpair.filemodes import check_private  # noqa: PLC0415  # keeps start-up fast

    if not out_dir.is_dir():
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        out_dir.chmod(0o700)  # the umask can only take bits away; make it exact
    check_private(out_dir, "the export directory")


def _write(path: Path, ders: list[bytes]) -> None:
    """Write a PEM file 0600 through a new temporary (``O_EXCL | O_NOFOLLOW``, a random
    name, so nothing planted is written through), renamed over ``path``."""
    import secrets  # noqa: PLC0415  # keeps start-up fast
    import ssl  # noqa: PLC0415

    from certpair.filemodes import create_private  # noqa: PLC0415

    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    create_private(tmp, "".join(ssl.DER_cert_to_PEM_cert(der) for der in ders).encode("ascii"))
    try:
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _recipes(out: dict[str, Any]) -> dict[str, str]:
    """Commands for openssl and curl, built from certpair's own values and quoted words.

    Every recipe pins one device: curl checks its public key, openssl its fingerprint.
    A bundle of several devices gets none (a tool checking names against it would accept
    each device under any name a certificate of the bundle claims): export one device
    with ``--peer`` for its recipes.
    """
    port = str(SERVE_PORT)
    tls = ["-connect", f"ADDRESS:{port}", "-tls1_3", "-cert", out["cert"], "-key", out["key"],
           "-CAfile", out["peers"], "-verify_return_error"]
    if len(out["devices"]) != 1:
        return {}
    device = out["devices"][0]
    # Only a plain host name goes into the command; a peer's odd "name" does not.
    host = host_name_or(next(iter(device["dns_names"]), None), "HOST")
    colons = ":".join(device["fingerprint"].removeprefix("sha256:")[i:i + 2]
                      for i in range(0, 64, 2)).upper()
    check = shell_command(["grep", "-iqxF", f"sha256 Fingerprint={colons}"])
    return {
        "openssl": (f"{shell_command(['openssl', 's_client', *tls])} </dev/null 2>/dev/null"
                    f" | openssl x509 -noout -fingerprint -sha256 | {check}"
                    f" && echo {_word(device['fingerprint'])}"),
        "curl": shell_command([
            "curl", "--cert", out["cert"], "--key", out["key"], "--cacert", out["peers"],
            "--pinnedpubkey", device["pinned_pubkey"],
            "--resolve", f"{host}:{port}:ADDRESS", f"https://{host}:{port}/"]),
    }


def _word(word: str) -> str:
    """One quoted shell word."""
    return shell_command([word])


def _render(out: dict[str, Any]) -> None:
    click.echo(f"Certificate:  {printable(out['cert'])}")
    click.echo(f"Private key:  {printable(out['key'])}  (not copied; keep it private)")
    devices = counted(len(out["devices"]), "device")
    click.echo(f"Peers:        {printable(out['peers'])}  ({devices})")
    for device in out["devices"]:
        names = " ".join(printable(n) for n in device["dns_names"]) or "(no DNS name)"
        click.echo(f"  {printable(device['name'])}  {device['fingerprint']}  {names}")
    for device in out["flagged"]:
        click.echo(f"  left out: {printable(device['name'])}  {device['fingerprint']}  "
                   f"(flagged, not trusted: {device['reason']})")
    if not out["devices"]:
        click.echo("No paired devices yet: peers.pem is empty.")
        return
    recipes = out["recipes"]
    click.echo("\nTalk to a device running `certpair serve` (replace ADDRESS):")
    if "curl" in recipes:
        click.echo("  # prints the device's fingerprint only if it is this device:")
        click.echo(f"  {recipes['openssl']}")
        click.echo("  # refuses any other key, even another paired device's:")
        click.echo(f"  {recipes['curl']}")
    else:
        click.echo("  export that one device: certpair export --peer NAME  (its recipes pin "
                   "its key; peers.pem alone accepts each of these devices under any name "
                   "their certificates claim)")


_CORRUPT = "the stored fingerprint does not match the stored certificate (a damaged row)"


@click.command("export", short_help="Write cert.pem and peers.pem for other TLS tools.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR", show_default="HOME/export",
              help="Directory to write to.")
@click.option("--peer", "query", metavar="PEER",
              help="Export only this device (name or fingerprint prefix).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
@click.pass_context
def command(ctx: click.Context, out_dir: Path | None, query: str | None, as_json: bool) -> None:
    """Write cert.pem and peers.pem for curl, openssl and other TLS tools.

    The private key is not copied; its path is printed.

    \b
    Examples:
      certpair export
      certpair export --peer beta --out ./certs
    """
    from certpair.store.anchors import anchor_problem  # noqa: PLC0415  # keeps start-up fast

    identity = identity_of(ctx)
    store = store_of(ctx, read_only=True)
    found: list[Peer] = [find_peer(store, query)] if query is not None else store.peers()
    hint = "" if out_dir is not None else "; choose another directory with --out DIR"
    # A flagged peer (one that could sign others, or a damaged row) never goes into a bundle.
    flagged = {p.fingerprint: why for p in found
               if (why := anchor_problem(p.cert_der) if p.intact else _CORRUPT)}
    if query is not None and flagged:
        raise PairingFailed(f"{printable(found[0].name)} is flagged and not trusted: "
                            f"{flagged[found[0].fingerprint]}; unpair it and pair again")
    peers = [p for p in found if p.fingerprint not in flagged]
    out_dir = out_dir if out_dir is not None else home_of(ctx) / "export"
    cert, bundle = out_dir / "cert.pem", out_dir / "peers.pem"
    try:
        _prepare(out_dir)
        _write(cert, [identity.cert_der])
        _write(bundle, [peer.cert_der for peer in peers])
    except OSError as exc:
        raise LocalStateError(
            f"cannot write to {out_dir}: {exc.strerror or exc}{hint}") from exc
    out: dict[str, Any] = {
        "cert": str(cert.resolve()), "key": str(identity.key_path.resolve()),
        "peers": str(bundle.resolve()),
        "devices": [{"name": p.name, "fingerprint": p.fingerprint,
                     "dns_names": _dns_names(p.cert_der),
                     "pinned_pubkey": _pinned_pubkey(p.cert_der)} for p in peers],
    }
    out["recipes"] = _recipes(out)
    out["flagged"] = [
        {"name": p.name, "fingerprint": p.fingerprint, "reason": flagged[p.fingerprint]}
        for p in found if p.fingerprint in flagged]
    if as_json:
        emit_json(out)
    else:
        _render(out)
