"""CSV: read an input file's rows (quoted fields may span lines; bad records are dead letters) and
encode match rows.
"""

from __future__ import annotations

import collections
import csv
import io

from transforms.common.schema import PairBatch
from transforms.io.files import binary_lines, columns_of, pair_rows, read_dead_letter

__all__ = ["csv_rows", "encode_csv"]



# Long vector columns (a 4096-d JSON array is ~100 kB of text) exceed csv's 128 kB default field limit.
_CSV_FIELD_LIMIT = 64 << 20


# Most physical lines one csv record (a quoted field with line breaks) may span.
_CSV_MAX_RECORD_LINES = 1000


def _csv_text(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue().encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _has_undecodable(values: list[str]) -> bool:
    # surrogateescape maps undecodable bytes to lone surrogates U+DC80..U+DCFF.
    return any(any("\udc80" <= ch <= "\udcff" for ch in v) for v in values)


class _CsvLineFeed:
    """The lines a ``csv.reader`` reads, numbered, with the lines of the current record kept.

    ``taken`` holds the (line number, text) lines of the record being read; lines pushed back onto
    ``pending`` are read again first. ``ran_out`` says the reader wanted another line for a record
    it had started (a quoted field still open at the end of the file, or past
    ``_CSV_MAX_RECORD_LINES``).
    """

    def __init__(self, source):
        self._source = source
        self.pending: collections.deque = collections.deque()
        self.taken: list[tuple[int, str]] = []
        self.ran_out = False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if len(self.taken) >= _CSV_MAX_RECORD_LINES:
            self.ran_out = True
            raise StopIteration
        line = self.pending.popleft() if self.pending else next(self._source, None)
        if line is None:
            self.ran_out = bool(self.taken)
            raise StopIteration
        self.taken.append(line)
        return line[1]

    def start_record(self) -> None:
        self.taken = []
        self.ran_out = False


def csv_rows(fh, path: str):
    """Rows of a csv file keyed by its header, read record by record with line-aware quoting.

    A quoted field may span lines (at most ``_CSV_MAX_RECORD_LINES``), but only when the record it
    ends gets the header's field count: a quote left open on a line (to the end of the file, or
    closing into a record of another width) is an error for that line alone, and reading resumes
    on the next line, so one stray quote does not swallow the rows after it.
    """
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    # Decode line by line with surrogateescape so one bad byte rejects its row, not the whole file.
    feed = _CsvLineFeed(enumerate((raw.decode("utf-8", errors="surrogateescape")
                                   for raw in binary_lines(fh)), 1))
    reader = csv.reader(feed)
    header = None
    while True:
        feed.start_record()
        error = ""
        try:
            row = next(reader)
        except StopIteration:
            if not feed.taken:
                return
            row, error = None, "unexpected end of data"
        except csv.Error as e:
            row, error = None, str(e)
        if not error and (feed.ran_out or (len(feed.taken) > 1 and header is not None
                                           and len(row) != len(header))):
            width = f" of {len(header)} fields" if header is not None else ""
            error = f"a quoted field is not closed on this line (nor within a record{width})"
        line_number, first_line = feed.taken[0]
        if error:
            feed.pending.extendleft(reversed(feed.taken[1:]))  # only this line is lost
            reader = csv.reader(feed)  # the old reader may be mid-record or past the end
            yield read_dead_letter(f"line {line_number}: {error}",
                                    _csv_text([first_line.rstrip("\r\n")]), path)
            continue
        if header is None:
            header = [h.lstrip("\ufeff") if i == 0 else h for i, h in enumerate(row)]
            continue
        if not row:
            continue
        if len(row) != len(header):
            yield read_dead_letter(f"line {line_number}: expected {len(header)} fields, got {len(row)}",
                                    _csv_text(row), path)
        elif _has_undecodable(row):
            yield read_dead_letter(f"line {line_number}: invalid UTF-8", _csv_text(row), path)
        else:
            yield dict(zip(header, row, strict=True))


def encode_csv(pairs: PairBatch) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns_of(pairs))
    writer.writerows([q, c, r, *(repr(v) for v in rest)] for q, c, r, *rest in pair_rows(pairs))
    return out.getvalue().encode("utf-8")
