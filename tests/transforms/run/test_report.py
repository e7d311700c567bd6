"""Tests for transforms.run.report: the self-contained HTML report and the text summary.

Each test builds a tiny fake output directory (a manifest plus match files written with
``transforms.io.write_matches.write_match_shard``), renders it and parses the page with ``html.parser``.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from transforms.common.schema import PairBatch
from transforms.io import results
from transforms.io.write_matches import match_shard_path, write_match_shard
from transforms.run.report import summary_text, write_report

_VOID = {"meta", "br", "img", "link", "hr", "input"}
FIGURES = ("distance-histogram", "shard-sizes", "stage-times", "recall-audit", "cluster-sizes")


class _Page(HTMLParser):
    """Collects what the tests look at: figures and their children, notes, links, tags, tooltips."""

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.figures: dict[str, dict] = {}
        self.absent: dict[str, str] = {}
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: set[str] = set()
        self.tooltips: dict[str, list[str]] = {}
        self._text_target: tuple[str, str] | None = None

    def _figure(self) -> str | None:
        for tag, attrs in reversed(self.stack):
            if tag == "figure":
                return attrs.get("id")
        return None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "data", "action", "srcset") and value:
                self.references.append((tag, name, value))
        if tag == "figure":
            self.figures[attrs.get("id")] = {"children": set(), "caption": ""}
        figure = self._figure()
        if figure is not None:
            self.figures[figure]["children"].add(tag)
            if tag == "figcaption":
                self._text_target = ("caption", figure)
            elif tag == "title":
                self._text_target = ("title", figure)
        if tag == "p" and "absent" in (attrs.get("class") or ""):
            self._text_target = ("absent", attrs.get("data-section"))
        if tag not in _VOID:
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break
        self._text_target = None

    def handle_data(self, data):
        if self._text_target is None:
            return
        kind, key = self._text_target
        if kind == "caption":
            self.figures[key]["caption"] += data
        elif kind == "title":
            self.tooltips.setdefault(key, []).append(data)
        else:
            self.absent[key] = self.absent.get(key, "") + data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _pairs(n_queries: int, k: int, seed: int = 0, prefix: str = "q") -> PairBatch:
    rng = np.random.default_rng(seed)
    q = np.repeat([f"{prefix}{i:04d}" for i in range(n_queries)], k).astype(object)
    c = np.array([f"c{j:05d}" for j in rng.integers(0, 10_000, size=n_queries * k)], dtype=object)
    ranks = np.tile(np.arange(1, k + 1), n_queries).astype(np.int64)
    dist = np.sort(rng.random((n_queries, k)), axis=1).reshape(-1)
    return PairBatch(q, c, ranks, dist)


def _full_manifest(out: str, pairs_written: int) -> dict:
    return {
        "mode": "dedup",
        "exit_state": "succeeded",
        "wall_seconds": 12.5,
        "flags": {"output": out, "top_k": 5, "index": "scann", "input": "gs://bucket/in/*.parquet"},
        "counts": {"input_read": 1000, "candidates_indexed": 990, "pairs_written": pairs_written,
                   "dead_letters": {"read": 4, "validate": 6}, "dead_letters_total": 10},
        "shards": [{"shard": s, "path": f"{out}/indexes/shard-{s:05d}-of-00003", "size": 330 + s,
                    "kind": "scann", "params": {"num_leaves": 20 + s, "reorder": 100}} for s in range(3)],
        "stage_busy_seconds": {"build": 3.5, "search": 1.25, "read": 0.5},
        "audit": {"recall_at_k": 0.95, "per_shard": {"0": 0.9, "1": 1.0, "2": 0.97}, "sample_size": 100,
                  "true_pairs": 500, "found_pairs": 475},
        "clusters": {"num_records": 990, "num_clusters": 700, "num_singletons": 600,
                     "cluster_size_histogram": {"1": 600, "2": 80, "3": 15, "7": 4, "1500": 1},
                     "largest_clusters": [{"cluster_id": "<script>alert(1)</script>", "size": 1500}],
                     "max_cluster_size": 1000, "num_giant_clusters": 1,
                     "giant_clusters": [{"cluster_id": "<script>alert(1)</script>", "size": 1500}],
                     "rounds": 9, "max_rounds": 40, "converged": True, "finished_in_one_place": False,
                     "unconverged_edges": 0},
    }


def _write_run(tmp_path, manifest: dict | None, batches: list[PairBatch], fmt: str = "parquet") -> str:
    out = str(tmp_path / "run")
    for shard, batch in enumerate(batches):
        write_match_shard(match_shard_path(out, fmt, shard, len(batches)), batch, fmt)
    if manifest is not None:
        (tmp_path / "run").mkdir(exist_ok=True)
        (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    return out


def _tooltip_total(page: _Page, figure: str) -> int:
    return sum(int(t.rsplit(": ", 1)[1].replace(",", "")) for t in page.tooltips[figure])


def test_full_report_has_every_figure_and_no_external_resource(tmp_path):
    pairs = _pairs(40, 5)
    out = _write_run(tmp_path, None, [pairs])
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(_full_manifest(out, len(pairs))))
    path = write_report(out)
    assert path == f"{out}/report.html"
    text = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    for fig in FIGURES:
        assert fig in page.figures, fig
        assert page.figures[fig]["children"] & {"svg", "img"}, fig
        assert "figcaption" in page.figures[fig]["children"] and page.figures[fig]["caption"].strip()
    assert page.absent == {}
    # Self-contained: nothing fetched from anywhere, no script at all.
    assert not [r for r in page.references if re.match(r"(?i)\s*(https?:)?//", r[2])]
    assert not ({"script", "link", "iframe", "object", "embed"} & page.tags)
    assert "http://" not in text and "https://" not in text and "@import" not in text
    # Every pair is in the histogram, and the caption says so.
    assert _tooltip_total(page, "distance-histogram") == len(pairs)
    assert "all 200 emitted pairs" in page.figures["distance-histogram"]["caption"]
    assert _tooltip_total(page, "cluster-sizes") == 700
    assert len(page.tooltips["shard-sizes"]) == 3 and len(page.tooltips["recall-audit"]) == 3
    assert "overall 0.9500" in text
    # Tables: counts, dead letters by stage, index parameters; ids are escaped.
    for table_id in ("counts", "dead-letters", "index-params", "audit", "cluster-stats", "giant-clusters"):
        assert f'id="{table_id}"' in text, table_id
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_absent_sections_are_noted(tmp_path):
    pairs = _pairs(10, 3)
    manifest = {"mode": "link", "exit_state": "failed", "error": "too many bad records",
                "counts": {"queries_read": 10, "candidates_read": 50, "pairs_written": len(pairs),
                           "dead_letters": {}, "dead_letters_total": 0}, "shards": []}
    out = _write_run(tmp_path, manifest, [pairs])
    page = _parse(_read(write_report(out)))
    assert set(page.figures) == {"distance-histogram"}
    assert set(page.absent) == {"shard-sizes", "stage-times", "recall-audit", "cluster-sizes"}
    assert "no audit" in page.absent["recall-audit"]
    assert "dedup mode only" in page.absent["cluster-sizes"]
    assert "stage_busy_seconds" in page.absent["stage-times"]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_missing_manifest_and_missing_matches_still_give_a_page(tmp_path):
    (tmp_path / "run").mkdir()
    page = _parse(_read(write_report(str(tmp_path / "run"))))
    assert {"manifest", "distance-histogram", "counts"} <= set(page.absent)
    assert "no match files" in page.absent["distance-histogram"]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv", "tfrecord"])
def test_large_output_reads_a_bounded_sample(tmp_path, fmt):
    batches = [_pairs(30, 4, seed=s, prefix=f"s{s}-") for s in range(3)]  # 3 files of 120 rows
    manifest = {"mode": "dedup", "counts": {"pairs_written": 360}}
    out = _write_run(tmp_path, manifest, batches, fmt)
    page = _parse(_read(write_report(out, max_sample_rows=150)))
    assert _tooltip_total(page, "distance-histogram") == 150
    caption = page.figures["distance-histogram"]["caption"]
    assert ("a sample of 150 of 360 pairs: every row of the first 1 of 3 match files in name order "
            "and a uniform sample of file 2") in caption
    distances, whole, rest, total = results.stream_distances(out, 150)
    assert (whole, rest, total) == (1, "sampled", 3)
    assert np.allclose(np.sort(distances[:120]), np.sort(batches[0].distances))
    # The sampled part of file 2 is spread over the file (its rows are sorted by query id, and the
    # distances of this fake data are sorted per query): not just its first 30 rows.
    second = np.sort(batches[1].distances)
    assert np.isin(distances[120:], second).all() and not np.array_equal(
        np.sort(distances[120:]), np.sort(batches[1].distances[:30]))
    assert results.stream_distances(out, 240)[1:] == (2, "skipped", 3)
    assert results.stream_distances(out, 360)[1:] == (3, "none", 3)
    assert len(results.stream_distances(out, 10_000)[0]) == 360


def test_summary_text_of_a_full_and_of_an_empty_manifest():
    text = summary_text(_full_manifest("/tmp/out", 200))
    lines = text.splitlines()
    assert lines[0] == "corpus-match dedup run: succeeded in 12.5 s"
    assert "  read:       input 1,000" in lines
    assert "  indexed:    990 candidates in 3 shard(s) (scann)" in lines
    assert "  rejected:   10 (read 4, validate 6)" in lines
    assert any(line.startswith("  recall@5:  0.9500 on 100 sampled queries (worst shard 0: 0.9000)")
               for line in lines)
    assert any("700 (600 singletons)" in line and "9 rounds, converged" in line for line in lines)
    assert "  busy time:  build 3.5s, read 0.5s, search 1.2s" in lines
    assert lines[-1].startswith("  output:     /tmp/out/ (") and "clusters/" in lines[-1]
    assert len(lines) <= 24
    empty = summary_text({})
    assert empty.splitlines()[0] == "corpus-match ? run: ?" and "?" in empty
