"""Writes templates/match_corpora/metadata.json from the job's flags (``transforms.common.flags.JOB_FLAGS``).

The metadata itself is built by :func:`beam_jobs.commands.template.template_metadata` (one parameter per flag,
same name, help text, ``isOptional``, regexes for gs:// paths, enums and numbers); this script only
renders it, so the committed file and the flags cannot drift (tests/templates/test_metadata.py compares
them). Run from the repository root after changing a flag::

    .venv/bin/python templates/match_corpora/generate_metadata.py          # rewrite metadata.json
    .venv/bin/python templates/match_corpora/generate_metadata.py --check  # exit 1 if out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["METADATA_PATH", "render", "main"]

METADATA_PATH = Path(__file__).resolve().parent / "metadata.json"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def render() -> str:
    """The metadata.json text the current flags produce."""
    if str(_REPO_ROOT) not in sys.path:  # running the file directly puts only its own folder on the path
        sys.path.insert(0, str(_REPO_ROOT))
    from beam_jobs.commands.template import template_metadata

    return json.dumps(template_metadata(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if metadata.json is out of date.")
    args = parser.parse_args(argv)
    text = render()
    current = METADATA_PATH.read_text(encoding="utf-8") if METADATA_PATH.exists() else None
    if args.check:
        if current != text:
            print(f"{METADATA_PATH} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        METADATA_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {METADATA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
