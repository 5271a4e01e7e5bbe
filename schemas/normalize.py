"""Question normalization: the one canonical form shared by compile time and serve time.

``normalize_question`` is the only way a question becomes a key. The compiler hashes the
canonical form of every approved question; the service hashes the canonical form of every live
question; both import this module, so the two hashes agree byte for byte.

Steps, in order: Unicode NFKC, case-fold (then NFKC again, since case folding can leave
non-normalized text), unify apostrophes, expand English contractions, drop apostrophes inside
words, turn every other punctuation mark into a space, collapse white space, trim. The result is
idempotent: normalizing a canonical form returns it unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import msgspec

from schemas.errors import InvalidInputError

__all__ = [
    "DEFAULT_LANGUAGE",
    "NormalizedQuestion",
    "canonical_text",
    "language_tag",
    "normalize_question",
]

DEFAULT_LANGUAGE: Final = "en"

_APOSTROPHES: Final = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'", "\u00b4": "'"}
)

# Whole-word contractions whose expansion is not a plain suffix rule.
_IRREGULAR: Final[dict[str, str]] = {
    "can't": "cannot",
    "cannot": "cannot",
    "won't": "will not",
    "shan't": "shall not",
    "ain't": "is not",
    "let's": "let us",
    "y'all": "you all",
    "ma'am": "madam",
    "o'clock": "of the clock",
}
# 's is only expanded after words where it means "is" (not a possessive).
_S_IS: Final = frozenset(
    {"it", "that", "what", "where", "who", "there", "here", "how", "he", "she", "this"}
    | {"when", "why", "everything", "something"}
)
_SUFFIXES: Final[tuple[tuple[str, str], ...]] = (
    ("n't", " not"),
    ("'re", " are"),
    ("'ll", " will"),
    ("'ve", " have"),
    ("'m", " am"),
    ("'d", " would"),
)
_WORD_WITH_APOSTROPHE: Final = re.compile(r"\w+(?:'\w+)+")
_SPACES: Final = re.compile(r"\s+")
_LANGUAGE: Final = re.compile(r"^[a-z]{2,3}\Z")


class NormalizedQuestion(msgspec.Struct, frozen=True, kw_only=True):
    """A question in canonical form with the language tag its keys use."""

    text: str
    language: str


def _expand(match: re.Match[str]) -> str:
    word = match.group(0)
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    for suffix, expansion in _SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix):
            return word[: -len(suffix)] + expansion
    head, _, tail = word.rpartition("'")
    if tail == "s" and head in _S_IS:
        return f"{head} is"
    # A possessive or a name (o'brien, customer's): keep the letters, drop the apostrophe.
    return word.replace("'", "")


class _PunctuationTable(dict[int, str | None]):
    """``str.translate`` table mapping punctuation, separators and control characters to a space
    (apostrophes kept); each code point's category is looked up once, then cached."""

    def __missing__(self, code: int) -> str | None:
        ch = chr(code)
        value = " " if unicodedata.category(ch)[0] in "PZC" and ch != "'" else None
        if value is None:
            value = ch
        if len(self) < _TABLE_LIMIT:  # bounded: hostile input cannot grow it without end
            self[code] = value
        return value


_TABLE_LIMIT: Final = 1 << 16
_PUNCTUATION: Final = _PunctuationTable()


def _strip_punctuation(text: str) -> str:
    return text.translate(_PUNCTUATION)


def canonical_text(question: str) -> str:
    """The canonical form of ``question`` (see the module docstring for the steps)."""
    text = unicodedata.normalize("NFKC", question)
    text = unicodedata.normalize("NFKC", text.casefold())
    text = text.translate(_APOSTROPHES)
    text = _strip_punctuation(text)
    text = _WORD_WITH_APOSTROPHE.sub(_expand, text)
    text = text.replace("'", " ")
    return _SPACES.sub(" ", text).strip()


def language_tag(language: str | None) -> str:
    """The primary language subtag of a BCP 47 tag (``en-GB`` -> ``en``); ``en`` when absent.

    Raises :class:`InvalidInputError` unless the tag starts with two or three ASCII letters.
    """
    if language is None or not language.strip():
        return DEFAULT_LANGUAGE
    primary = language.strip().replace("_", "-").split("-", 1)[0].lower()
    if not _LANGUAGE.match(primary):
        raise InvalidInputError(
            f"language tag {language!r} is not a BCP 47 tag",
            hint="use a code such as en or en-GB",
        )
    return primary


def normalize_question(question: str, language: str | None = None) -> NormalizedQuestion:
    """Canonical text plus language tag; the input to every question key."""
    return NormalizedQuestion(text=canonical_text(question), language=language_tag(language))
