"""Text normalisation of record fields, in TF ops: the one definition the embedding's preprocessing
and the pairwise scorer share, so both see the same text.

:func:`normalize_text` applies Unicode compatibility decomposition with accents dropped (NFKD, then
combining marks removed: ``Łódź`` -> ``lodz``, ``ﬁ`` -> ``fi``, full-width digits -> ASCII), lower case,
deletes apostrophes (``O'Brien`` -> ``obrien``), turns every other run of punctuation, symbols or
whitespace into one space, month names next to a day and a year into numbers (``12 Mar 1987`` ->
``12 3 1987``), splits 8-digit dates (``19850307`` / ``07031985`` -> three numbers) and drops leading
zeros from numbers (``07/03/1985`` and ``1985-3-7`` give the same numbers). Common street-type and
company-suffix words have a canonical short form (``street`` -> ``st``, ``limited`` -> ``ltd``):
:func:`abbreviation_table`, applied to word tokens by :func:`abbreviate_tokens` (the tokeniser's
and :func:`compiled_normalizer`'s one definition).

The lookup tables are built here; tracking them in a tf.Transform graph (``tft.make_and_track_object``)
is ``transforms.features.preprocess``'s job, so this module needs TensorFlow but not tf.Transform.

What it does not do: tokenise, hash or weigh terms (``transforms.features.preprocess``), phonetic
coding, nicknames, or transliteration of non-Latin scripts beyond NFKD.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from functools import lru_cache

import tensorflow as tf

__all__ = [
    "normalize_text",
    "abbreviate_tokens",
    "fold_table",
    "abbreviation_table",
    "lookup_tables",
    "eager_tables",
    "compiled_normalizer",
]

_NO_FOLD = "\x00\x00"  # lookup default: no single character folds to two NULs
# Characters without an NFKD decomposition that people still write without their diacritic/ligature.
_EXTRA_FOLDS = {"ß": "ss", "ẞ": "ss", "ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l",
                "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "þ": "th", "Þ": "th", "ı": "i",
                "ð": "d", "Ð": "d", "ħ": "h", "Ħ": "h"}
# Word -> canonical short form. Small on purpose: street types and company suffixes, the abbreviations
# that dominate address and company data; applied to both corpora alike.
_ABBREVIATIONS = {
    "street": "st", "road": "rd", "avenue": "ave", "av": "ave", "drive": "dr", "court": "ct",
    "place": "pl", "crescent": "cres", "lane": "ln", "boulevard": "blvd", "highway": "hwy",
    "parade": "pde", "terrace": "tce", "close": "cl", "circuit": "cct", "square": "sq",
    "grove": "gr", "mount": "mt", "saint": "st", "apartment": "apt",
    "limited": "ltd", "incorporated": "inc", "corporation": "corp", "company": "co",
    "proprietary": "pty", "gmbh": "gmbh",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NAME = "(?:" + "|".join(_MONTHS) + ")[a-z]*"


@lru_cache(maxsize=1)
def _fold_map() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Character -> replacement for NFKD-with-accents-dropped, computed once from Python's unicodedata.

    The table is baked into the transform_fn as constants, so workers with another Python (and Unicode
    database) version still apply the exact mapping the analysis used.
    """
    keys, values = [], []
    # Planes 0-1, the CJK compatibility supplement and the variation-selector supplement hold every
    # character with a decomposition or a nonspacing mark.
    codepoints = (*range(0x20000), *range(0x2F800, 0x2FA20), *range(0xE0100, 0xE01F0))
    for cp in codepoints:
        if 0xD800 <= cp <= 0xDFFF or 0xAC00 <= cp <= 0xD7A3:  # surrogates; Hangul syllables stay whole
            continue
        ch = chr(cp)
        if ch in _EXTRA_FOLDS:
            keys.append(ch)
            values.append(_EXTRA_FOLDS[ch])
        elif unicodedata.category(ch) == "Mn":
            keys.append(ch)
            values.append("")
        elif unicodedata.decomposition(ch):
            folded = "".join(c for c in unicodedata.normalize("NFKD", ch)
                             if unicodedata.category(c) != "Mn")
            if folded != ch:
                keys.append(ch)
                values.append(folded)
    return tuple(keys), tuple(values)


def fold_table() -> tf.lookup.StaticHashTable:
    """The accent-folding table: one character -> its replacement (``_NO_FOLD`` when none)."""
    keys, values = _fold_map()
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values)), _NO_FOLD)


def abbreviation_table() -> tf.lookup.StaticHashTable:
    """The abbreviation table: one normalised word -> its canonical short form ('' when none)."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(_ABBREVIATIONS)),
                                            tf.constant(list(_ABBREVIATIONS.values()))), "")


def lookup_tables() -> tuple[tf.lookup.StaticHashTable, tf.lookup.StaticHashTable]:
    """The (accent folding, abbreviation) lookup tables, built in the init scope.

    tf.Transform's tracing builds them through ``tft.make_and_track_object`` instead, so they are
    saved with the transform_fn (``transforms.features.preprocess`` does that and passes them to
    :func:`normalize_text`).
    """
    with tf.init_scope():
        return fold_table(), abbreviation_table()


@lru_cache(maxsize=1)
def eager_tables() -> tuple:
    """The lookup tables of :func:`normalize_text`, built once per process for eager callers (the
    pairwise scorer normalises every batch; building the tables each time costs more than the
    normalisation). Not for use inside tf.Transform's tracing, which tracks its own."""
    return lookup_tables()


@lru_cache(maxsize=1)
def compiled_normalizer() -> Callable[[tf.Tensor], tf.Tensor]:
    """:func:`normalize_text`, then each word abbreviated (:func:`abbreviate_tokens`), as one
    ``tf.function`` over a ``tf.string [n]`` batch, traced once per process with the
    :func:`eager_tables`: the ops the tokeniser runs, in one graph call instead of about a hundred
    eager dispatches (the scorer normalises every batch; eager dispatch was 80 % of its cost)."""
    tables = eager_tables()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def normalize(texts: tf.Tensor) -> tf.Tensor:
        words = tf.strings.split(normalize_text(texts, tables))
        words = words.with_flat_values(abbreviate_tokens(words.flat_values, tables[1]))
        return tf.strings.reduce_join(words, axis=-1, separator=" ")

    return normalize


def _fold_accents(texts: tf.Tensor, fold: tf.lookup.StaticHashTable) -> tf.Tensor:
    chars = tf.strings.unicode_split(texts, "UTF-8", errors="replace")
    flat = chars.flat_values
    mapped = fold.lookup(flat)
    flat = tf.where(tf.equal(mapped, _NO_FOLD), flat, mapped)
    return tf.strings.reduce_join(chars.with_flat_values(flat), axis=-1)


def _subset_apply(texts: tf.Tensor, pattern: str, fn: Callable[[tf.Tensor], tf.Tensor],
                  negate: bool = False) -> tf.Tensor:
    """Applies ``fn`` only to the rows that fully match ``pattern`` (or do not, with ``negate``)."""
    hit = tf.strings.regex_full_match(texts, pattern)
    if negate:
        hit = tf.logical_not(hit)
    hit_at = tf.cast(tf.where(hit)[:, 0], tf.int32)
    miss_at = tf.cast(tf.where(tf.logical_not(hit))[:, 0], tf.int32)
    return tf.dynamic_stitch([miss_at, hit_at], [tf.gather(texts, miss_at), fn(tf.gather(texts, hit_at))])


def _month_numbers(texts: tf.Tensor) -> tf.Tensor:
    """'12 mar 1987' / 'march 12 1987' -> '12 3 1987' / '3 12 1987' (only next to day and year)."""
    for number, month in enumerate(_MONTHS, start=1):
        texts = tf.strings.regex_replace(texts, rf"\b(\d{{1,2}}) {month}[a-z]* (\d{{2,4}})\b",
                                         rf"\1 {number} \2")
        texts = tf.strings.regex_replace(texts, rf"\b{month}[a-z]* (\d{{1,2}}) (\d{{4}})\b",
                                         rf"{number} \1 \2")
    return texts


def normalize_text(texts: tf.Tensor, tables: tuple | None = None) -> tf.Tensor:
    """Normalises a 1-D string tensor (see the module docstring); usable eagerly and in graphs.

    Args:
        texts: tf.string [n], UTF-8 (invalid bytes become U+FFFD).
        tables: the lookup tables (:func:`lookup_tables`, :func:`eager_tables`, or the ones
            tf.Transform tracks); built when not given.

    Returns:
        tf.string [n]: words of lower-case letters and digits separated by single spaces; '' when
        nothing is left.
    """
    texts = tf.convert_to_tensor(texts, tf.string)
    fold, _ = tables or lookup_tables()
    # Only rows with non-ASCII characters need the (per character) accent folding.
    texts = _subset_apply(texts, r"[\x00-\x7f]*", lambda t: _fold_accents(t, fold), negate=True)
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, r"['’‘`´ʼ]", "")
    texts = tf.strings.regex_replace(texts, r"[^\p{L}\p{N}\p{M}]+", " ")
    texts = _subset_apply(texts, rf".*\d {_MONTH_NAME} \d.*|.*\b{_MONTH_NAME} \d{{1,2}} \d{{4}}\b.*",
                          _month_numbers)
    # Compact dates: yyyymmdd, then ddmmyyyy / mmddyyyy.
    texts = tf.strings.regex_replace(
        texts, r"\b((?:19|20)\d\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\b", r"\1 \2 \3")
    texts = tf.strings.regex_replace(texts, r"\b(\d\d)(\d\d)((?:19|20)\d\d)\b", r"\1 \2 \3")
    texts = tf.strings.regex_replace(texts, r"\b0+(\d)", r"\1")
    return tf.strings.strip(texts)


def abbreviate_tokens(words: tf.Tensor, abbreviations: tf.lookup.StaticHashTable) -> tf.Tensor:
    """Each word (a flat tf.string tensor) replaced by its canonical short form, where it has one."""
    short = abbreviations.lookup(words)
    return tf.where(tf.equal(short, ""), words, short)
