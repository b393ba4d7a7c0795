"""Aligned columns for a terminal, with every cell made harmless.

Cells pass through :func:`certpair.cli.terminal.printable` (anything a peer chose may
hold escape sequences, control or bidi characters), then are cut to their column's
width with an ellipsis. Widths are fixed per column, so a listing can be printed line
by line as it is read, without holding every row first.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from certpair.cli.terminal import printable

__all__ = ["ELLIPSIS", "TERMINAL_COLUMNS", "Columns", "truncate", "width"]

ELLIPSIS = "…"


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide East Asian characters take two)."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in {"W", "F"} else 1 for ch in text)


def truncate(text: str, columns: int) -> str:
    """Cut ``text`` to at most ``columns`` columns, ending in an ellipsis if cut."""
    if width(text) <= columns:
        return text
    out, used = [], 0
    for ch in text:
        w = width(ch)
        if used + w > columns - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + ELLIPSIS


TERMINAL_COLUMNS = 80  # what a listing fits by default; --wide prints every field whole


class Columns:
    """A table layout: headers and the width of every column but the last, which is
    unbounded, or cut so that a line fits ``fit`` columns."""

    def __init__(self, headers: Sequence[str], widths: Sequence[int], *,
                 fit: int | None = None) -> None:
        """``widths`` has one entry per column except the last."""
        assert len(widths) == len(headers) - 1
        self.headers = tuple(headers)
        self.widths = tuple(max(w, width(h)) for w, h in zip(widths, headers, strict=False))
        self.last: int | None = None
        if fit is not None:
            self.last = fit - sum(self.widths) - 2 * len(self.widths)
            assert self.last >= width(self.headers[-1])

    def header(self) -> str:
        """The header line."""
        return self._line(self.headers)

    def row(self, cells: Sequence[str]) -> str:
        """One row: every cell made printable, cut to its column, padded; no trailing space."""
        safe = [printable(cell) for cell in cells]
        cut = [truncate(cell, w) for cell, w in zip(safe, self.widths, strict=False)]
        last = safe[-1] if self.last is None else truncate(safe[-1], self.last)
        return self._line([*cut, last])

    def _line(self, cells: Sequence[str]) -> str:
        padded = [cell + " " * (w - width(cell)) for cell, w in
                  zip(cells, self.widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()
