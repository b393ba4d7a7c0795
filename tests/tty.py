"""A real terminal for tests: a private tmux server, keys typed with ``send-keys``, the
screen read with ``capture-pane``. Waiting is polling the screen for a condition, with
a bound; never a fixed sleep."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

TMUX = shutil.which("tmux")
_EXIT = re.compile(r"^\[exit (\d+)\]$", re.MULTILINE)


class Terminal:
    """One tmux pane running one command; the pane stays readable after the command ends."""

    def __init__(self, workdir: Path, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 width: int = 160, height: int = 40) -> None:
        assert TMUX is not None
        self.socket = str(workdir / "tmux.sock")
        conf = workdir / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 2000\n")
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        command = f"env {exports} {shlex.join(argv)}" if exports else shlex.join(argv)
        # The shell prints the exit status: tmux's own #{pane_dead_status} is not always set.
        command = f"{command}; printf '\\n[exit %d]\\n' $?"
        self._tmux("-f", str(conf), "new-session", "-d", "-s", "t", "-x", str(width),
                   "-y", str(height), command)

    def _tmux(self, *args: str) -> str:
        assert TMUX is not None
        return subprocess.run([TMUX, "-S", self.socket, *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    def screen(self) -> str:
        """What the terminal shows now (visible rows, trailing blanks dropped)."""
        return self._tmux("capture-pane", "-p", "-t", "t").rstrip("\n")

    def history(self) -> str:
        """Everything printed, scrolled-off rows included."""
        return self._tmux("capture-pane", "-p", "-S", "-", "-t", "t").rstrip("\n")

    def type(self, text: str, *, enter: bool = True) -> None:
        """Type ``text`` (literally) and, by default, Enter."""
        self._tmux("send-keys", "-t", "t", "-l", text)
        if enter:
            self._tmux("send-keys", "-t", "t", "Enter")

    def wait_for(self, condition: Callable[[str], bool], what: str,
                 timeout: float = 30.0) -> str:
        """Poll the screen until ``condition(screen)`` holds; return that screen."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if condition(shown):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{shown}")
            time.sleep(0.05)  # polling interval, not synchronisation

    def exit_status(self, timeout: float = 30.0) -> int:
        """Wait for the command to end; its exit status."""
        shown = self.wait_for(lambda s: _EXIT.search(s) is not None, "the command to end",
                              timeout)
        found = _EXIT.search(shown)
        assert found is not None
        return int(found.group(1))

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-S", self.socket, "kill-server"], capture_output=True,
                       check=False, timeout=30)
