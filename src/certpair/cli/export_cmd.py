"""``certpair export``: this device's certificate and its peers as PEM, for other tools.

Writes ``cert.pem`` (this device) and ``peers.pem`` (every paired device, or one) and
points to the private key where it lies; the key is never copied. With them,
``curl --cert --key --cacert`` and ``openssl s_client``/``s_server -cert -key -CAfile
-verify_return_error`` talk to paired certpair devices (recipes: docs/TRUST.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certpair.cli.context import emit_json, find_peer, home_of, identity_of, store_of
from certpair.cli.serve_cmd import DEFAULT_SERVE_PORT
from certpair.errors import LocalStateError

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


def _write(path: Path, ders: list[bytes]) -> None:
    import ssl  # noqa: PLC0415  # keeps start-up fast

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(ssl.DER_cert_to_PEM_cert(der) for der in ders), encoding="ascii")
    tmp.replace(path)


def _render(out: dict[str, Any]) -> None:
    click.echo(f"Certificate:  {out['cert']}")
    click.echo(f"Private key:  {out['key']}  (not copied; keep it private)")
    click.echo(f"Peers:        {out['peers']}  ({len(out['devices'])} devices)")
    for device in out["devices"]:
        click.echo(f"  {device['name']}  {device['fingerprint']}  "
                   f"{' '.join(device['dns_names']) or '(no DNS name)'}")
    if not out["devices"]:
        click.echo("No paired devices yet: peers.pem is empty.")
        return
    dns = (out["devices"][0]["dns_names"] or ["HOST"])[0]
    port = DEFAULT_SERVE_PORT
    click.echo("\nTalk to a device running `certpair serve` (replace ADDRESS):")
    click.echo(f"  openssl s_client -connect ADDRESS:{port} -cert {out['cert']} "
               f"-key {out['key']} -CAfile {out['peers']} -verify_return_error")
    click.echo(f"  curl --cert {out['cert']} --key {out['key']} --cacert {out['peers']} "
               f"--resolve {dns}:{port}:ADDRESS https://{dns}:{port}/")


@click.command("export")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Directory to write to (default: HOME/export).")
@click.option("--peer", "query", metavar="PEER",
              help="Export only this device (name or fingerprint prefix).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def command(ctx: click.Context, out_dir: Path | None, query: str | None, as_json: bool) -> None:
    """Write cert.pem and peers.pem for curl, openssl and other TLS tools."""
    identity = identity_of(ctx)
    store = store_of(ctx, read_only=True)
    peers: list[Peer] = [find_peer(store, query)] if query is not None else store.peers()
    hint = "" if out_dir is not None else "; choose another directory with --out DIR"
    out_dir = out_dir if out_dir is not None else home_of(ctx) / "export"
    cert, bundle = out_dir / "cert.pem", out_dir / "peers.pem"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write(cert, [identity.cert_der])
        _write(bundle, [peer.cert_der for peer in peers])
    except OSError as exc:
        raise LocalStateError(
            f"cannot write to {out_dir}: {exc.strerror or exc}{hint}") from exc
    out = {
        "cert": str(cert.resolve()), "key": str(identity.key_path.resolve()),
        "peers": str(bundle.resolve()),
        "devices": [{"name": p.name, "fingerprint": p.fingerprint,
                     "dns_names": _dns_names(p.cert_der)} for p in peers],
    }
    if as_json:
        emit_json(out)
    else:
        _render(out)
