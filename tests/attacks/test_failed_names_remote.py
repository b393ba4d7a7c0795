"""The offerer's final `failed` line names the remote address of the joiner whose proof
failed (issue 10 §3)."""

from __future__ import annotations

import re
from pathlib import Path

from certpair.codes import CPACE_DEFAULT_DIGITS, generate_code
from tests.cliutil import LOOPBACK, Proc, certpair_argv, run


def test_text_failed_line_names_the_joiner(homes: tuple[Path, Path],
                                           offerers: list[Proc]) -> None:
    a, b = homes
    offerer = Proc(certpair_argv(a, "pair", "--once", "--port", "0", "--listen", LOOPBACK,
                                 "--no-advertise"))
    offerers.append(offerer)
    match = None
    while match is None:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", offerer.next_line())
    wrong = generate_code(CPACE_DEFAULT_DIGITS).display
    result = run(b, "join", f"{LOOPBACK}:{match.group(1)}", wrong)
    assert result.returncode == 1
    assert offerer.proc.wait(60) == 1
    assert offerer.proc.stderr is not None
    err = offerer.proc.stderr.read()
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: pairing failed"), err
    assert re.search(r"from 127\.0\.0\.1:\d+", last), last
