"""What a device name may be: the one rule for one's own name and for names peers send.

A name is shown to people next to a fingerprint, so it must not be able to hide or
disguise itself: no control characters, no Unicode format characters (category Cf:
bidi overrides that reverse the text shown, zero-width joiners and spaces that make two
different names look alike), and not empty or blank.

Two names are *the same to a person* (:func:`same_name`, :func:`name_key`) when they are
equal after NFKC and case folding, or when their Unicode confusable skeletons are equal
(UTS #39: ``yankee`` spelled with a Cyrillic a, U+0430, reads as ``yankee``). The confusable data is
the `confusable-homoglyphs` package's copy of Unicode's ``confusables.txt``, loaded on
first use; a name mixing scripts (:func:`is_mixed_script`) is marked where it is shown.
"""

from __future__ import annotations

import functools
import unicodedata

from certpair.errors import BadInput

__all__ = ["MAX_NAME_BYTES", "BadName", "check_name", "is_mixed_script", "name_key",
           "same_name"]

MAX_NAME_BYTES = 64


class BadName(BadInput):
    """A device name breaks the rule; the message says which part."""


def check_name(name: str) -> str:
    """Check a device name: 1 to 64 bytes of UTF-8, not blank, no control or format chars.

    Args:
        name: the proposed name.

    Returns:
        The name, unchanged.

    Raises:
        BadName: empty, blank, too long, or holding a control or format character.
    """
    try:
        encoded = name.encode("utf-8", errors="strict")
    except UnicodeEncodeError:
        raise BadName("a device name must be valid UTF-8") from None
    if not 1 <= len(encoded) <= MAX_NAME_BYTES:
        raise BadName(f"a device name is 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in name):
        raise BadName("a device name cannot contain control characters")
    if any(unicodedata.category(ch) == "Cf" for ch in name):
        raise BadName("a device name cannot contain invisible formatting characters "
                      "(bidi overrides, zero-width characters)")
    if not name.strip():
        raise BadName("a device name cannot be blank")
    return name


def same_name(a: str, b: str) -> bool:
    """Whether two names read the same to a person: equal after NFKC, case folding and
    collapsing blanks, or look-alikes (equal confusable skeletons, UTS #39)."""
    return name_key(a) == name_key(b)


def name_key(name: str) -> str:
    """The form under which names that read the same to a person are equal.

    NFKC, then each character replaced by the representative of its class of
    look-alikes (Unicode's confusables, with upper and lower case in one class), blanks
    collapsed. Equal keys: the same name to a person; the store indexes this key.
    """
    text = " ".join(unicodedata.normalize("NFKC", name).split())
    classes = _classes()
    return "".join(classes.get(ch, ch) for ch in text.casefold())


def is_mixed_script(name: str) -> bool:
    """Whether ``name`` mixes letters of several scripts, as a look-alike of a familiar
    name does (``yankee`` with a Cyrillic a: Latin and Cyrillic).

    Common and inherited characters (digits, punctuation, accents) count for no script,
    and the combinations UTS #39 calls *highly restrictive* (Latin with Han and
    Hiragana/Katakana, with Han and Bopomofo, with Han and Hangul) are one script.
    """
    if name.isascii():
        return False  # ASCII is Latin and Common only
    from confusable_homoglyphs import categories  # noqa: PLC0415  # data loaded on use

    scripts = set(categories.unique_aliases(name)) - {"COMMON", "INHERITED"}
    return len(scripts) > 1 and not any(scripts <= allowed for allowed in _ONE_WRITING)


_ONE_WRITING = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


@functools.cache
def _classes() -> dict[str, str]:
    """Each character with a look-alike, mapped to its class's representative.

    Unicode's confusables pair a character with the prototype it looks like; joined
    with case (``O``, ``o``) the pairs form classes, and the smallest code point of a
    class stands for it. Loaded once per process, on the first comparison.
    """
    from confusable_homoglyphs import confusables  # noqa: PLC0415  # ~40 ms of data

    parent: dict[str, str] = {}

    def find(ch: str) -> str:
        root = ch
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(ch, ch) != root:  # path compression
            parent[ch], ch = root, parent[ch]
        return root

    def join(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    data: dict[str, list[dict[str, str]]] = confusables.confusables_data
    for char, glyphs in data.items():
        if len(char) != 1:
            continue
        for glyph in glyphs:
            other = glyph["c"]
            if len(other) == 1:
                join(char, other)
        for ch in (char, *(g["c"] for g in glyphs if len(g["c"]) == 1)):
            folded = ch.casefold()
            if len(folded) == 1 and folded != ch:
                join(ch, folded)
    return {ch: find(ch) for ch in parent}
