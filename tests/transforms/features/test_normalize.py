"""Text normalisation (transforms.features.normalize): accents, case, punctuation, dates."""

from __future__ import annotations

import pytest
import tensorflow as tf

from transforms.features.normalize import normalize_text


def _texts(values: list[str | None]) -> list[str]:
    return [t.decode() for t in normalize_text(tf.constant([v or "" for v in values])).numpy()]


@pytest.mark.parametrize("raw, expected", [
    ("José", "jose"), ("ŁÓDŹ", "lodz"), ("Müller-Straße", "muller strasse"), ("Ærø", "aero"),
    ("  John \t  SMITH ", "john smith"), ("O'Brien", "obrien"), ("Smith, J.R.", "smith j r"),
    ("ﬁne ＡＢＣ１２", "fine abc12"), ("12 Main Street", "12 main street"), ("---", ""), ("", ""),
])
def test_normalize_accents_case_punctuation_whitespace(raw, expected):
    assert _texts([raw]) == [expected]


def test_dates_normalise_to_the_same_numbers():
    forms = ["1987-03-12", "12/03/1987", "19870312", "12 Mar 1987", "March 12, 1987", "03/12/1987"]
    got = _texts(forms)
    assert len({" ".join(sorted(t.split())) for t in got}) == 1, got
    assert _texts(["Jan Smith", "May 5"]) == ["jan smith", "may 5"]  # month words need day and year
