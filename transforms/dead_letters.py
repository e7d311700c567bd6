"""The one dead-letter record every stage emits for input it rejects, and helpers to build it.

A dead letter says which stage rejected which record and why, with the raw payload (truncated) and the
file it came from. Stages emit them on a tagged side output named ``DEAD_LETTER_TAG``; the pipeline
flattens all of them into ``DIR/dead_letters/`` and counts them per stage in Beam metrics.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from apache_beam.metrics import Metrics

from transforms import metrics

__all__ = ["DEAD_LETTER_TAG", "DeadLetter", "MAX_PAYLOAD_CHARS", "make_dead_letter", "payload_text"]

DEAD_LETTER_TAG = "dead_letters"
# Rejected payloads are kept for diagnosis, not replay of huge rows: cap their size.
MAX_PAYLOAD_CHARS = 2000


class DeadLetter(NamedTuple):
    """One rejected record. ``record_id`` is '' when the id itself could not be read."""

    stage: str
    record_id: str
    error: str
    payload: str
    source: str

    def to_json(self) -> str:
        return json.dumps(self._asdict(), sort_keys=True, ensure_ascii=False)


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return repr(value)


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
    return text


def make_dead_letter(stage: str, record_id: Any, error: str, payload: Any, source: str) -> DeadLetter:
    """Builds a dead letter and counts it in the ``dead_letters_<stage>`` Beam counter."""
    Metrics.counter(metrics.NAMESPACE, metrics.dead_letter_counter(stage)).inc()
    rid = "" if record_id is None else str(record_id)
    return DeadLetter(stage=stage, record_id=rid, error=str(error)[:500], payload=payload_text(payload),
                      source=str(source or ""))
