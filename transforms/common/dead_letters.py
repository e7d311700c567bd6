"""The one dead-letter record every stage emits for input it rejects, and helpers to build it.

A dead letter says which stage rejected which record and why, with the raw payload (truncated) and the
file it came from. Stages emit them on a tagged side output named ``DEAD_LETTER_TAG``; the pipeline
flattens all of them into ``DIR/dead_letters/`` and counts them per stage in Beam metrics.

Most letters stand for one record. A file-level fault (a corrupt parquet row group, a file the reader
cannot read to its end) stands for every row it lost: ``rows`` is that count when the file's metadata
knows it, and 0 (:data:`UNKNOWN_ROWS`) when nothing says how many rows were lost; such a letter is a
*bad file* (``--max_bad_files``) and weighs one row in the bad-record ratio. Every text field of a
letter is valid UTF-8: characters UTF-8 cannot encode (lone surrogates) are written as ``\\udXXX``
escapes, so the letter of a record carrying one can always be written.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from apache_beam.metrics import Metrics

from transforms.common import metrics

__all__ = ["DEAD_LETTER_TAG", "DeadLetter", "MAX_PAYLOAD_CHARS", "UNKNOWN_ROWS", "make_dead_letter",
           "payload_text", "rows_rejected", "is_bad_file", "utf8_safe"]

DEAD_LETTER_TAG = "dead_letters"
# Rejected payloads are kept for diagnosis, not replay of huge rows: cap their size.
MAX_PAYLOAD_CHARS = 2000
# ``DeadLetter.rows`` of a file fault whose lost row count nothing records.
UNKNOWN_ROWS = 0


class DeadLetter(NamedTuple):
    """One rejected record. ``record_id`` is '' when the id itself could not be read.

    ``rows`` is how many input rows the letter stands for: 1 for a record, the lost rows of a
    file-level fault as the file's metadata gives them, or ``UNKNOWN_ROWS`` (0).
    """

    stage: str
    record_id: str
    error: str
    payload: str
    source: str
    rows: int = 1

    def to_json(self) -> str:
        return json.dumps(self._asdict(), sort_keys=True, ensure_ascii=False)


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return repr(value)


def utf8_safe(text: str) -> str:
    """``text`` if UTF-8 can encode it, else with every lone surrogate as a ``\\udXXX`` escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text


def rows_rejected(letter: DeadLetter) -> int:
    """The rows a letter weighs in the bad-record ratio: its ``rows``, and 1 for an unknown count."""
    return max(int(letter.rows), 1)


def is_bad_file(letter: DeadLetter) -> bool:
    """A file-level fault with an unknown row count (counted against ``--max_bad_files``)."""
    return int(letter.rows) == UNKNOWN_ROWS


def payload_text(payload: Any) -> str:
    """Renders a raw record as text (JSON where possible), truncated to MAX_PAYLOAD_CHARS."""
    if isinstance(payload, bytes):
        text = payload.decode("utf-8", errors="replace")
    elif isinstance(payload, str):
        text = payload
    else:
        try:
            text = json.dumps(payload, default=_default, ensure_ascii=False, allow_nan=True)
        except (TypeError, ValueError):
            text = repr(payload)
    if len(text) > MAX_PAYLOAD_CHARS:
        text = text[:MAX_PAYLOAD_CHARS] + f"...[truncated {len(text) - MAX_PAYLOAD_CHARS} chars]"
    return utf8_safe(text)


def make_dead_letter(stage: str, record_id: Any, error: str, payload: Any, source: str,
                     rows: int = 1) -> DeadLetter:
    """Builds a dead letter and counts the rows it stands for in the ``dead_letters_<stage>`` counter.

    ``rows``: 1 for a record; for a file-level fault the rows lost, or ``UNKNOWN_ROWS``.
    """
    letter = DeadLetter(stage=stage, record_id=utf8_safe("" if record_id is None else str(record_id)),
                        error=utf8_safe(str(error)[:500]), payload=payload_text(payload),
                        source=utf8_safe(str(source or "")), rows=int(rows))
    Metrics.counter(metrics.NAMESPACE, metrics.dead_letter_counter(stage)).inc(rows_rejected(letter))
    return letter
