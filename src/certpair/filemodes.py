"""Local files that only this user may change, as ssh's ``StrictModes`` asks.

A home, its ``identity/`` and its ``trust.db`` decide whom this device trusts: if another
local user can write one of them (a group- or world-writable directory, a file owned by
someone else), that user can swap in a trust store that trusts their certificate.
:func:`check_private` refuses such a path with one line that names the ``chmod`` or
``chown`` that fixes it; :func:`create_private` makes a new file 0600 whatever the
umask, never through an existing file or a planted symlink.
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
from pathlib import Path

from certpair.errors import LocalStateError

__all__ = [
    "InsecurePath",
    "check_key_mode",
    "check_private",
    "create_private",
    "fsync_directory",
    "write_private",
]


class InsecurePath(LocalStateError):
    """A path that decides whom this device trusts can be changed by another user."""


def _user(uid: int) -> str:
    try:
        import pwd  # noqa: PLC0415  # not on every platform

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def check_private(path: Path, what: str) -> None:
    """Refuse ``path`` if a user other than this one (or root) could change it.

    Args:
        path: a directory or file; one that does not exist passes (creating it is the
            caller's business, and reading it reports what is missing).
        what: how the message names it (``the certpair home``, ``the trust store``).

    Raises:
        InsecurePath: owned by another user, or writable by group or others; the
            message is one line with the command that fixes it.
    """
    try:
        found = path.stat()
    except OSError:
        return
    me = os.geteuid()
    quoted = shlex.quote(str(path))
    if found.st_uid not in (me, 0):
        raise InsecurePath(
            f"{what} {path} belongs to another user ({_user(found.st_uid)}), who could "
            f"change whom this device trusts; refusing to use it: run "
            f"'chown {shlex.quote(_user(me))} {quoted}' (as root) if it is yours")
    mode = stat.S_IMODE(found.st_mode)
    if mode & 0o022:
        who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if mode & bit)
        raise InsecurePath(
            f"{what} {path} is writable by {who} (mode {mode:04o}), who could change whom "
            f"this device trusts; refusing to use it: run 'chmod go-w {quoted}'")


def create_private(path: Path, data: bytes = b"") -> None:
    """Create ``path`` 0600 (whatever the umask) holding ``data``.

    ``O_CREAT | O_EXCL | O_NOFOLLOW``: an existing file or symlink at ``path`` is never
    written through.

    Raises:
        FileExistsError: something is at ``path`` already.
        OSError: it cannot be created.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, 0o600)  # umask can only remove bits: make the mode exact
        file.write(data)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_key_mode(key_path: Path) -> None:
    """Refuse a key file that group or others may read or write (like ssh)."""
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
    except OSError:
        return  # reading it reports the problem
    if mode & 0o077:
        raise LocalStateError(
            f"the private key {key_path} is readable by others (mode {mode:04o}); "
            f"refusing to use it: run 'chmod 600 {key_path}'")


def write_private(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` (fsynced), created with exactly ``mode`` before
    any byte lands, through a new temporary name (never an existing file or link)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        # umask can only remove bits; fchmod makes the mode exact before any byte lands.
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
