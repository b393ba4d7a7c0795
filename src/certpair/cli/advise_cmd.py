"""``certpair advise``: the minimum secret length for an attacker and a risk."""

from __future__ import annotations

import click

from certpair.cli.context import emit_json
from certpair.cli.params import Finite

# Mirrors certpair.advice.DEFAULT_GPU_GUESSES_PER_SECOND (checked by a test), so that
# building the CLI does not import the crypto stack.
_GPU_RATE = 2.2e10

__all__ = ["command"]


@click.command("advise", short_help="Compute the shortest safe secret for a risk.")
@click.option("--mode", type=click.Choice(["cpace", "hmac"]), default="cpace", show_default=True,
              help="The pairing mode to advise on.")
@click.option("--ttl", type=Finite(0, 31_536_000, min_open=True), default=300,
              show_default=True, metavar="SECONDS",
              help="hmac: seconds the key stays valid (at most a year).")
@click.option("--risk", type=Finite(0, 1, min_open=True, max_open=True), default=1e-6,
              show_default=True, metavar="P", help="Accepted chance that the attacker succeeds.")
@click.option("--guesses-per-second", type=Finite(0, 1e30, min_open=True), metavar="RATE",
              default=format(_GPU_RATE, "g"), show_default=True,
              help="hmac: the attacker's offline guesses per second (the default is one "
                   "RTX 4090's rate, a safe bound).")
@click.option("--codes", type=click.IntRange(1, 1_000_000), default=10, metavar="N",
              show_default=True,
              help="cpace: codes issued per pairing run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per line.")
def command(mode: str, ttl: float, risk: float, guesses_per_second: float, codes: int,
            as_json: bool) -> None:
    """Print the shortest secret that keeps an attacker's chance below --risk.

    Formulas and the attacker model: docs/SECURITY.md.

    \b
    Examples:
      certpair advise --risk 1e-9
      certpair advise --mode hmac --ttl 600 --json
    """
    from certpair.advice import advise  # noqa: PLC0415  # keeps start-up fast
    from certpair.codes import CPACE_MAX_DIGITS, Mode  # noqa: PLC0415

    result = advise(mode=Mode(mode), risk=risk, ttl=ttl, guesses_per_second=guesses_per_second,
                    codes=codes)
    if as_json:
        emit_json({"mode": mode, "bits": round(result.bits, 2), "length": result.length,
                   "unit": result.unit, "option": result.option})
        return
    if mode == "cpace" and "--mode hmac" in result.option:
        click.echo(f"cpace: at least {result.bits:.1f} bits = {result.length} digits, more than "
                   f"a code holds ({CPACE_MAX_DIGITS} at most); use hmac mode: "
                   f"certpair pair {result.option}")
        return
    click.echo(f"{mode}: at least {result.bits:.1f} bits = {result.length} {result.unit} "
               f"(certpair pair {result.option})")
