"""Field comparisons: normalisation, date codes and comparison levels on small hand-made values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from transforms.scoring import comparisons
from transforms.scoring.comparisons import (
    MISSING,
    compare_fields,
    compare_numbers,
    compare_text,
    date_codes,
    gram_cosine,
    normalize_values,
    record_fields,
    take_rows,
    value_hashes,
)


def _obj(values):
    return np.array(values, dtype=object)


def test_normalisation_matches_the_embedding_preprocessing():
    got = normalize_values(["  O'Brien-Smith ", "Łódź", "12 Main Street", "", None, "ACME Limited"])
    assert got.tolist() == ["obrien smith", "lodz", "12 main st", None, None, "acme ltd"]


def test_lone_surrogates_and_huge_values_do_not_crash():
    got = normalize_values(["ab\ud800cd", "x" * 10_000])
    assert got[0] is not None and got[1] == "x" * 10_000


def test_every_writing_of_a_date_gets_one_code():
    values = normalize_values(["1985-03-07", "07/03/1985", "19850307", "7 Mar 1985", "smith", None])
    codes = date_codes(values)
    assert codes[:4].tolist() == [19850307] * 4
    assert codes[4:].tolist() == [-1, -1]


def test_text_levels_order_by_similarity():
    a = _obj(["smith", "smith", "john smith", "kowalczyk", None, "smith"])
    b = _obj(["smith", "smyth", "smith john", "brown", "smith", None])
    levels = compare_text(a, b)
    assert levels[0] == 0
    assert 1 <= levels[1] <= 2  # one-letter typo
    assert levels[2] == 1  # reordered words
    assert levels[3] == 4
    assert levels[4] == MISSING and levels[5] == MISSING


def test_date_levels_know_swaps_and_single_component_changes():
    a_text = _obj(["1985 3 7", "1985 3 7", "1985 3 7", "1985 3 7", "1985 3 7"])
    b_text = _obj(["7 3 1985", "1985 7 3", "1986 3 7", "1986 11 20", "2001 9 9"])
    da, db = date_codes(a_text), date_codes(b_text)
    levels = compare_text(a_text, b_text, da, db)
    assert levels.tolist() == [0, 1, 1, 3, 4]


def test_number_levels_by_relative_difference():
    a = np.array([100.0, 100.0, 100.0, 100.0, 100.0, np.nan])
    b = np.array([100.0, 100.5, 103.0, 120.0, 200.0, 1.0])
    assert compare_numbers(a, b).tolist() == [0, 1, 2, 3, 4, MISSING]


def test_value_hashes_are_stable_salted_and_zero_for_missing():
    h1 = value_hashes(_obj(["smith", None]), "surname")
    h2 = value_hashes(_obj(["smith", None]), "surname")
    h3 = value_hashes(_obj(["smith", None]), "given_name")
    assert h1.tolist() == h2.tolist() and h1[1] == 0 and h1[0] != 0 and h1[0] != h3[0]


def test_record_fields_and_compare_fields_align_pairs():
    table = pa.record_batch({"name": pa.array(["Ann Lee", "Lee, Ann", None]),
                             "dob": pa.array(["1990-01-02", "02/01/1990", "1990-01-02"]),
                             "amount": pa.array([10.0, 10.0, None], pa.float64())})
    fields = record_fields(_obj(["a", "b", "c"]), _obj(["f#0", "f#1", "f#2"]), table, ("name", "dob"),
                           ("amount",))
    left, right = take_rows(fields, np.array([0, 0])), take_rows(fields, np.array([1, 2]))
    levels = compare_fields(left, right)
    assert levels.shape == (2, 3)
    assert levels[0].tolist() == [1, 0, 0]
    assert levels[1].tolist() == [MISSING, 0, MISSING]


def _gram_counts_reference(value: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for word in value.split():
        padded = f" {word} "
        for k in (2, 3):
            for i in range(len(padded) - k + 1):
                out[padded[i:i + k]] = out.get(padded[i:i + k], 0) + 1
    return out


@pytest.mark.parametrize("chunk", [7, 1 << 16])  # rows per sparse matrix: chunk edges change nothing
def test_gram_cosine_equals_a_per_pair_count_oracle(monkeypatch, chunk):
    monkeypatch.setattr(comparisons, "_GRAM_CHUNK", chunk)
    rng = np.random.default_rng(0)
    words = ["univ", "university", "of", "melbourne", "dept", "physics", "zürich", "ag", "x", "acme"]
    a = [" ".join(rng.choice(words, rng.integers(1, 6))) for _ in range(500)]
    b = [" ".join(rng.choice(words, rng.integers(1, 6))) for _ in range(500)]
    expected = []
    for x, y in zip(a, b, strict=True):
        gx, gy = _gram_counts_reference(x), _gram_counts_reference(y)
        dot = sum(v * gy.get(g, 0) for g, v in gx.items())
        expected.append(dot / np.sqrt(sum(v * v for v in gx.values()) * sum(v * v for v in gy.values())))
    np.testing.assert_allclose(gram_cosine(a, b), expected, rtol=1e-12, atol=1e-12)
    # Grams stay within words: the order of the words does not matter.
    assert gram_cosine(["acme holdings pty"], ["pty acme holdings"])[0] == 1.0
    assert gram_cosine([], []).shape == (0,)


def test_words_added_or_moved_score_closer_than_the_edit_ratios_alone():
    from rapidfuzz import fuzz
    from rapidfuzz.distance import JaroWinkler

    # True duplicates of the organisation generator (bench.quality orgs), and one single word.
    a = _obj(["global biotech ltd", "germany kennedy properties gmbh", "acme"])
    b = _obj(["united kingdom global biotech ltd", "kennedy properties gmbh", "acne"])
    edit = [max(JaroWinkler.normalized_similarity(x, y), fuzz.token_sort_ratio(x, y) / 100)
            for x, y in zip(a[:2], b[:2], strict=True)]
    assert edit[0] < 0.75 and edit[1] < 0.88  # 'different' and 'weak' by the edit ratios alone
    # The gram cosine: 'weak' and 'close'; a single word is Jaro-Winkler's alone (0.87: 'weak').
    assert compare_text(a, b).tolist() == [3, 2, 3]
