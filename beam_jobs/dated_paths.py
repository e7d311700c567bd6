"""The ``{date}`` placeholder of dated paths: ``--output gs://b/runs/{date}`` -> the launch's UTC date.

Nightly runs launch the same command (a Flex Template launch body, a schedule) every day; the
paths of :data:`DATE_FLAGS` may carry ``{date}`` or ``{date:FMT}``, expanded once at launch by the
job (``beam_jobs.match_corpora``) and the template shim, and when the template commands are
printed. Pure string work: no Beam, no Google Cloud, nothing heavy, so the launcher imports this and
not the template command builder (``beam_jobs.commands.template``).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence

__all__ = ["DATE_FLAGS", "expand_date_placeholders", "expand_date_flags"]

# Flags whose values may carry a {date} placeholder (nightly runs read dated exports, write dated output).
DATE_FLAGS = ("queries", "candidates", "input", "output")
_DATE_RE = re.compile(r"\{date(?::([^{}]*))?\}")


def _utc_date(now: datetime.datetime | datetime.date | None) -> datetime.date:
    if now is None:
        return datetime.datetime.now(datetime.UTC).date()
    if isinstance(now, datetime.datetime):
        # Naive datetimes are taken as UTC already; aware ones are converted.
        return now.astimezone(datetime.UTC).date() if now.tzinfo else now.date()
    return now


def expand_date_placeholders(value: str, now: datetime.datetime | datetime.date | None = None) -> str:
    """Replaces ``{date}`` with the UTC date (``YYYY-MM-DD``) and ``{date:FMT}`` with ``strftime(FMT)``.

    Used for nightly runs: a fixed launch body with ``--output gs://b/runs/{date}`` writes a new
    directory every day. The date is the day the job is *launched* (UTC), not the data's day.
    Other braces are left alone; the expansion is idempotent.

    Args:
        value: a flag value, e.g. ``gs://bucket/runs/{date}`` or ``gs://b/x/{date:%Y/%m/%d}/*.parquet``.
        now: the launch time; ``None`` means now. Naive datetimes are read as UTC.

    Returns:
        ``value`` with every date placeholder replaced.

    Raises:
        ValueError: on an empty format (``{date:}``).
    """
    if "{date" not in value:
        return value
    day = _utc_date(now)

    def _sub(match: re.Match[str]) -> str:
        fmt = match.group(1)
        if fmt is None:
            return day.isoformat()
        if not fmt:
            raise ValueError(f"empty date format in {value!r}; use {{date}} or {{date:%Y/%m/%d}}")
        return day.strftime(fmt)

    return _DATE_RE.sub(_sub, value)


def expand_date_flags(argv: Sequence[str], now: datetime.datetime | datetime.date | None = None) -> list[str]:
    """Expands date placeholders in the values of :data:`DATE_FLAGS` in an argv list.

    Both ``--output=VALUE`` and ``--output VALUE`` forms are handled; other arguments pass unchanged.
    """
    out = list(argv)
    names = {f"--{name}" for name in DATE_FLAGS}
    i = 0
    while i < len(out):
        arg = out[i]
        flag, eq, val = arg.partition("=")
        if flag in names:
            if eq:
                out[i] = f"{flag}={expand_date_placeholders(val, now)}"
            elif i + 1 < len(out):
                out[i + 1] = expand_date_placeholders(out[i + 1], now)
                i += 1
        i += 1
    return out
