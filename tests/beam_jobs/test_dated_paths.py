"""The {date} placeholder of dated paths (beam_jobs/dated_paths.py), as the job and the shim expand it."""

from __future__ import annotations

import datetime

import pytest

from beam_jobs.dated_paths import expand_date_flags, expand_date_placeholders

# The launch time of tests/beam_jobs/commands/test_template.py.
NOW = datetime.datetime(2026, 3, 14, 23, 30, 5, tzinfo=datetime.UTC)



def test_expand_date_placeholders():
    assert expand_date_placeholders("gs://b/runs/{date}", NOW) == "gs://b/runs/2026-03-14"
    assert expand_date_placeholders("gs://b/{date:%Y/%m/%d}/x", NOW) == "gs://b/2026/03/14/x"
    assert expand_date_placeholders("gs://b/{date}-{date:%Y%m%d}", datetime.date(2026, 1, 2)) == (
        "gs://b/2026-01-02-20260102")
    # UTC, not local time: 23:30 at UTC-5 is already the next day in UTC.
    eastern = datetime.datetime(2026, 3, 14, 23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert expand_date_placeholders("{date}", eastern) == "2026-03-15"
    assert expand_date_placeholders("{date}", datetime.datetime(2026, 3, 14, 23, 30)) == "2026-03-14"
    assert expand_date_placeholders("gs://b/{other}/{dates}/x", NOW) == "gs://b/{other}/{dates}/x"
    assert expand_date_placeholders(expand_date_placeholders("{date}", NOW), NOW) == "2026-03-14"
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert expand_date_placeholders("{date}") in {today, (datetime.date.fromisoformat(today)
                                                          + datetime.timedelta(days=1)).isoformat()}
    with pytest.raises(ValueError, match="empty date format"):
        expand_date_placeholders("{date:}", NOW)


def test_expand_date_flags_handles_both_argv_forms():
    argv = ["--output=gs://o/{date}", "--input", "gs://i/{date}/*", "--text_fields", "{date}", "--top_k=3"]
    assert expand_date_flags(argv, NOW) == [
        "--output=gs://o/2026-03-14", "--input", "gs://i/2026-03-14/*",
        "--text_fields", "{date}", "--top_k=3"]
    assert expand_date_flags(["--output"], NOW) == ["--output"]
