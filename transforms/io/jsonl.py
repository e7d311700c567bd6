"""JSON lines: read an input file's rows (bad lines are dead letters) and encode match rows.
"""

from __future__ import annotations

import json

from transforms.common.schema import PairBatch
from transforms.io.files import binary_lines, columns_of, pair_rows, read_dead_letter

__all__ = ["jsonl_rows", "encode_jsonl"]



def jsonl_rows(fh, path: str):
    for line_number, raw in enumerate(binary_lines(fh), 1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
            row = json.loads(text.lstrip("\ufeff") if line_number == 1 else text)
        except UnicodeDecodeError as e:
            yield read_dead_letter(f"line {line_number}: invalid UTF-8: {e}", raw, path)
            continue
        except (json.JSONDecodeError, RecursionError) as e:
            yield read_dead_letter(f"line {line_number}: invalid JSON: {e}", raw, path)
            continue
        if not isinstance(row, dict):
            yield read_dead_letter(f"line {line_number}: expected a JSON object, got "
                                    f"{type(row).__name__}", raw, path)
            continue
        yield row


def encode_jsonl(pairs: PairBatch) -> bytes:
    # json.dumps writes floats with repr(): the shortest text that round-trips the float64.
    names = columns_of(pairs)
    lines = [json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) + "\n"
             for row in pair_rows(pairs)]
    return "".join(lines).encode("utf-8")
