"""Beam metric namespace and names, in one place so the manifest and tests agree on them."""

from __future__ import annotations

__all__ = ["NAMESPACE", "dead_letter_counter", "records_read_counter", "STAGES"]

NAMESPACE = "corpus_matcher"

# Stage names used in dead letters, metrics, timing and the manifest.
STAGES = ("read", "validate", "preprocess", "embed", "shard", "build", "search", "merge", "write")


def dead_letter_counter(stage: str) -> str:
    return f"dead_letters_{stage}"


def records_read_counter(role: str) -> str:
    return f"{role}_read"
