"""A run's output directory: what is already there, how a run takes it over, and when it is finished.

Every path goes through Beam ``FileSystems``, so local paths, gs:// and mem:// behave alike.

- :func:`inspect_output_dir` lists what ``--output`` holds: nothing, a run (``manifest.json``;
  its ``exit_state``; ``_SUCCESS``), and files that are not a run's outputs (:data:`RUN_ENTRIES`
  names everything a run, ``evaluate`` or ``calibrate`` writes at the top of the directory).
- :func:`check_output_dir` is the launcher's check before any pipeline exists: a directory holding
  anything is refused unless ``--overwrite``; with it, a directory holding files that are not a
  run's, or an input of this run (``--index_dir``, ``--transform_fn_dir``, ...), is still refused.
- :func:`claim_output_dir` deletes the old run's outputs (``_SUCCESS`` first, so the directory stops
  looking finished at once) and writes a manifest with ``exit_state`` ``running`` before the
  pipeline runs; :func:`mark_finished` writes ``_SUCCESS`` last, once every output is complete
  (the launcher after a local run, the pipeline's last step on a runner the launcher does not wait
  for). ``_SUCCESS`` lists every output file and its size, except ``manifest.json`` and scratch
  (``tmp/``, ``.spill/``).
- :func:`require_finished` is what readers of a run's outputs call: a directory with a
  ``manifest.json`` but no ``_SUCCESS`` (running, killed, failed, or written before ``_SUCCESS``
  existed) raises :class:`IncompleteRunError` naming it. A directory with neither is not a run
  (files written by ``WriteMatches`` alone, as in tests) and is left to the reader's own checks.
- :func:`check_complete_shards` checks that ``name-SSSSS-of-NNNNN`` files are the whole set.

This module deletes only the entries in :data:`RUN_ENTRIES`; it never deletes a directory it cannot
recognise as a run's.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.common.artifacts import SUCCESS_MARKER, is_local_path, join_path, read_text, write_text
from transforms.common.errors import ConfigError

__all__ = [
    "RUN_ENTRIES",
    "RUN_STATES",
    "IncompleteRunError",
    "OutputDirState",
    "inspect_output_dir",
    "check_output_dir",
    "claim_output_dir",
    "mark_finished",
    "require_finished",
    "check_complete_shards",
    "check_run_shards",
    "kept_index_run_dir",
]

_LOGGER = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Everything a run writes at the top of its directory (and what `evaluate` / `calibrate` write
# beside it by default, since they describe the run's matches): --overwrite deletes these only.
RUN_DIRS = ("matches", "dead_letters", "indexes", "clusters", "transform_fn", "default_model",
            "scoring", "tmp", ".spill")
RUN_FILES = (MANIFEST, SUCCESS_MARKER, "report.html", "evaluation.json", "calibration.json",
             "calibration.png", "calibration.scoring_model.json")
RUN_ENTRIES = RUN_DIRS + RUN_FILES
# Scratch space under the output (tf.Transform's temp files, named at random; spill files), left
# out of the _SUCCESS listing.
_SCRATCH_DIRS = ("tmp", ".spill")
# manifest.json exit_state values. running: written by the launcher before the pipeline starts (the
# run is in progress, or died); pipeline_completed: the pipeline wrote its manifest and a launcher
# that waits has not yet added its timings; succeeded; failed.
RUN_STATES = ("running", "pipeline_completed", "succeeded", "failed")
_SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<shard>\d{5,})-of-(?P<count>\d{5,})(?P<ext>\.[^/]*)?$")
_SHOWN = 3  # file names quoted in an error


class IncompleteRunError(FileNotFoundError):
    """A run's outputs are not complete: the run did not finish, or a shard file is missing."""


@dataclass(frozen=True)
class OutputDirState:
    """What an output directory holds (see :func:`inspect_output_dir`)."""

    path: str
    files: tuple[str, ...] = ()  # every file, relative to ``path``, '/'-separated, sorted
    manifest: dict[str, Any] | None = None  # the parsed manifest.json, if there is one
    foreign: tuple[str, ...] = field(default=())  # files that are not a run's outputs

    @property
    def empty(self) -> bool:
        return not self.files

    @property
    def finished(self) -> bool:
        return SUCCESS_MARKER in self.files

    @property
    def exit_state(self) -> str | None:
        return None if self.manifest is None else str(self.manifest.get("exit_state", "unknown"))

    def describe(self) -> str:
        """What the directory holds, in a few words (for one-line errors)."""
        if self.foreign:
            return (f"{len(self.foreign)} file(s) that are not a corpus-match run's outputs "
                    f"({_quote(self.foreign)})")
        if self.manifest is None:
            return f"{len(self.files)} file(s) of a run without its {MANIFEST} ({_quote(self.files)})"
        if self.finished:
            return f"a finished run (exit_state {self.exit_state})"
        if self.exit_state == "running":
            return "an unfinished run (exit_state running: still running, or killed)"
        return f"an unfinished run (exit_state {self.exit_state}, no {SUCCESS_MARKER})"


def _quote(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def is_run_entry(rel: str) -> bool:
    """True for a path (relative to the output directory) inside what a run writes."""
    top = rel.split("/", 1)[0]
    if top in RUN_DIRS or top in RUN_FILES:
        return True
    # Temporary names (<name>.tmp-<uuid>) from a killed write: write_bytes' of the top-level files,
    # and the default embedder's export written aside before its rename into default_model/.
    return any(top.startswith(f"{name}.tmp-") for name in RUN_ENTRIES)


def _prefix(path: str) -> str:
    return join_path(path.rstrip("/") or "/", "")


def list_files(path: str) -> list[str]:
    """Every file under ``path`` (any Beam filesystem), relative and '/'-separated, sorted."""
    prefix = _prefix(path)
    found = FileSystems.match([prefix + "**"])[0].metadata_list
    out = []
    for m in found:
        name = m.path
        if is_local_path(prefix):
            name = os.path.relpath(name, prefix).replace(os.sep, "/")
        elif name.startswith(prefix):
            name = name[len(prefix):]
        else:
            continue
        if name and not name.endswith("/"):  # an object store's directory placeholder is no file
            out.append(name)
    return sorted(out)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        value = json.loads(read_text(path))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def inspect_output_dir(path: str) -> OutputDirState:
    """Lists what ``path`` holds. A missing directory is empty."""
    files = tuple(list_files(path))
    manifest = _read_json(join_path(path, MANIFEST)) if MANIFEST in files else None
    if manifest is None and MANIFEST in files:
        manifest = {"exit_state": "unreadable"}
    foreign = tuple(f for f in files if not is_run_entry(f))
    return OutputDirState(path=path, files=files, manifest=manifest, foreign=foreign)


def _inside(path: str, root: str) -> bool:
    """True when ``path`` (a file, directory or glob) lies in or is the directory ``root``; a glob
    when its fixed part does, or any file it matches now does (``/runs/*/a.csv`` and ``/runs/x``)."""
    fixed = re.split(r"[*?\[]", path, maxsplit=1)[0]  # a glob: the part before its first wildcard
    if fixed != path:
        if _inside_one(fixed, root):
            return True
        matched = FileSystems.match([path])[0].metadata_list
        return any(_inside_one(m.path, root) for m in matched)
    return _inside_one(path, root)


def _inside_one(path: str, root: str) -> bool:
    if is_local_path(path) != is_local_path(root):
        return False
    if is_local_path(root):
        path, root = os.path.realpath(path or "."), os.path.realpath(root)
        return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
    root = root.rstrip("/") + "/"
    return path == root.rstrip("/") or path.startswith(root)


def check_output_dir(output: str, *, overwrite: bool, inputs: dict[str, str | None]) -> OutputDirState:
    """The launcher's check of ``--output`` before any pipeline exists.

    Args:
        output: the --output directory.
        overwrite: --overwrite: a run's outputs there may be replaced.
        inputs: flag name -> a path this run reads (globs allowed); None values are skipped.

    Returns:
        What the directory holds.

    Raises:
        ConfigError: one line naming --overwrite (and the flag, for an input inside the directory).
    """
    if is_local_path(output) and os.path.isfile(output):
        raise ConfigError(f"--output {output} is a file, not a directory")
    state = inspect_output_dir(output)
    if state.empty:
        return state
    if state.foreign:
        raise ConfigError(f"--output {output} holds {state.describe()}: choose an empty or new --output "
                          "(--overwrite replaces only a run's own outputs)")
    if not overwrite:
        raise ConfigError(f"--output {output} already holds {state.describe()}: pass --overwrite to "
                          "replace it, or choose another --output")
    for flag, value in sorted(inputs.items()):
        if value and _inside(value, output):
            raise ConfigError(f"--{flag} {value} lies inside --output {output}, which --overwrite would "
                              "delete while this run reads it: write to another --output")
    return state


def claim_output_dir(output: str, static: dict[str, Any], *, overwrite: bool) -> list[str]:
    """Deletes an old run's outputs under ``output`` and writes the ``running`` manifest.

    Call after :func:`check_output_dir` passed. The directory is inspected again: another launch
    may have claimed it since the check (a scheduler firing twice), and without ``overwrite`` this
    one then stops instead of deleting the other's files. ``_SUCCESS`` goes first and
    ``manifest.json`` is rewritten last, so at no point does the directory look like a finished run.

    Returns:
        The deleted files, relative to ``output``.

    Raises:
        ConfigError: the directory changed since the check and may not be replaced.
    """
    state = inspect_output_dir(output)
    if state.foreign:  # checked before; the directory changed since
        raise ConfigError(f"--output {output} holds files that are not a run's outputs: "
                          f"{_quote(state.foreign)}")
    if state.files and not overwrite:
        raise ConfigError(f"--output {output} was empty at launch and now holds {state.describe()} "
                          "(another launch into it?): pass --overwrite to replace it, or choose "
                          "another --output")
    old = [f for f in state.files if f not in (MANIFEST, SUCCESS_MARKER)]
    if state.finished:
        FileSystems.delete([join_path(output, SUCCESS_MARKER)])
    if old:
        FileSystems.delete([join_path(output, *f.split("/")) for f in old])
        if is_local_path(output):
            _prune_empty_dirs(output)
    if state.files:
        _LOGGER.info("--overwrite: deleted the %d files of the earlier run under %s (%s)",
                     len(state.files), output, state.describe())
    manifest = dict(static)
    manifest["exit_state"] = "running"
    write_text(join_path(output, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return sorted(state.files)


def _prune_empty_dirs(output: str) -> None:
    for name in RUN_DIRS:
        top = os.path.join(output, name)
        for dirpath, _, _ in sorted(os.walk(top, topdown=False), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:  # not empty
                pass


def mark_finished(output: str) -> str:
    """Writes ``DIR/_SUCCESS`` listing every output file and its size (except manifest.json, whose
    timings differ from run to run). Call only once every output of the run is complete."""
    prefix = _prefix(output)
    found = FileSystems.match([prefix + "**"])[0].metadata_list
    sizes = {}
    for m in found:
        rel = (os.path.relpath(m.path, prefix).replace(os.sep, "/") if is_local_path(prefix)
               else m.path[len(prefix):])
        base = posixpath.basename(rel)
        if (not base or rel in (MANIFEST, SUCCESS_MARKER) or ".tmp-" in rel
                or rel.split("/", 1)[0] in _SCRATCH_DIRS):
            continue
        sizes[rel] = int(m.size_in_bytes)
    marker = join_path(output, SUCCESS_MARKER)
    write_text(marker, json.dumps({"files": dict(sorted(sizes.items()))}, indent=1, sort_keys=True))
    _LOGGER.info("wrote %s (%d files)", marker, len(sizes))
    return marker


def require_finished(output: str, *, what: str = "its outputs") -> dict[str, int] | None:
    """Raises IncompleteRunError when ``output`` holds a run that did not finish.

    Returns:
        The ``_SUCCESS`` listing (relative path -> size) of a finished run, or None when the
        directory is not a run's (no manifest.json and no _SUCCESS: files written by the
        composites alone), which the caller reads as plain files.
    """
    marker = join_path(output, SUCCESS_MARKER)
    if FileSystems.exists(marker):
        files = (_read_json(marker) or {}).get("files")
        if not isinstance(files, dict):  # cut short, or not ours: the listing check cannot be skipped
            raise IncompleteRunError(f"{output}: {SUCCESS_MARKER} is unreadable or lists no files; "
                                     f"not reading {what}. Rerun it with --overwrite")
        return {str(k): int(v) for k, v in files.items()}
    manifest_file = join_path(output, MANIFEST)
    if not FileSystems.exists(manifest_file):
        return None
    manifest = _read_json(manifest_file) or {}
    state = manifest.get("exit_state", "unknown")
    why = {"running": "it is still running, or was killed",
           "failed": f"it failed: {str(manifest.get('error', ''))[:300]}"}.get(
        state, f"no {SUCCESS_MARKER} (killed before the end, or written before {SUCCESS_MARKER} existed)")
    raise IncompleteRunError(
        f"{output}: the run did not finish (exit_state {state}; {why}); not reading {what}. Rerun it "
        f"with --overwrite, or read the partial outputs explicitly (allow_incomplete=True / "
        f"--allow_incomplete)")


def check_complete_shards(paths: list[str], *, where: str, expected: int | None = None,
                          listing: dict[str, int] | None = None, root: str | None = None) -> None:
    """Raises IncompleteRunError unless ``paths`` are exactly shards 0..N-1 of one ``-of-N`` set.

    Args:
        paths: the shard files found (``stem-SSSSS-of-NNNNN.ext``).
        where: the directory, for the message.
        expected: the number of shards the run's manifest says it wrote, when known.
        listing: a finished run's ``_SUCCESS`` listing; with ``root``, the shard files directly
            under ``where`` must be exactly those it lists.
        root: the run's output directory (the listing's paths are relative to it).
    """
    sets: dict[tuple[str, str, int], set[int]] = {}
    odd = []
    for path in paths:
        m = _SHARD_NAME.match(posixpath.basename(path))
        if not m:
            odd.append(posixpath.basename(path))
            continue
        sets.setdefault((m["stem"], m["ext"] or "", int(m["count"])), set()).add(int(m["shard"]))
    if odd:
        raise IncompleteRunError(f"{where}: {_quote(tuple(odd))} not named like a shard "
                                 "(name-SSSSS-of-NNNNN)")
    if len(sets) > 1:
        names = tuple(f"{s}-*-of-{n:05d}{e}" for s, e, n in sorted(sets))
        raise IncompleteRunError(f"{where} mixes shard sets {_quote(names)} (files of more than one run?)")
    for (stem, ext, count), shards in sets.items():
        missing = sorted(set(range(count)) - shards)
        if missing:
            names = tuple(f"{stem}-{s:05d}-of-{count:05d}{ext}" for s in missing)
            raise IncompleteRunError(f"{where}: {len(missing)} of {count} shard files missing "
                                     f"({_quote(names)})")
        if expected is not None and count != expected:
            raise IncompleteRunError(f"{where} holds {count} shard files; the run's manifest says "
                                     f"{expected}")
    if listing is not None and root is not None:
        prefix = _prefix(root)
        found = {(os.path.relpath(p, prefix).replace(os.sep, "/") if is_local_path(prefix)
                  else p[len(prefix):]) for p in paths}
        sub = posixpath.relpath(where, root.rstrip("/")) if not is_local_path(root) else \
            os.path.relpath(where, root).replace(os.sep, "/")
        listed = {rel for rel in listing if posixpath.dirname(rel) == sub
                  and _SHARD_NAME.match(posixpath.basename(rel))}
        if listed - found:
            raise IncompleteRunError(f"{where}: {_quote(tuple(sorted(listed - found)))} listed in "
                                     f"{SUCCESS_MARKER} but missing")
        if found - listed:
            raise IncompleteRunError(f"{where}: {_quote(tuple(sorted(found - listed)))} not listed "
                                     f"in {SUCCESS_MARKER} (written after the run finished?)")


def kept_index_run_dir(index_dir: str) -> str:
    """The run directory of an --index_dir (a run's output directory or its ``indexes/``)."""
    root = index_dir.rstrip("/")
    if posixpath.basename(root) == "indexes" and not FileSystems.exists(join_path(root, MANIFEST)):
        return posixpath.dirname(root) if not is_local_path(root) else os.path.dirname(root)
    return root


def check_run_shards(output: str, subdir: str, paths: list[str], *, what: str) -> None:
    """A reader's whole check: the run in ``output`` finished (:func:`require_finished`) and
    ``paths`` are the complete shard set under ``output/subdir`` (the manifest's
    ``num_output_shards``, the ``_SUCCESS`` listing). Raises IncompleteRunError."""
    listing = require_finished(output, what=what)
    expected = None
    if listing is not None:
        manifest = _read_json(join_path(output, MANIFEST)) or {}
        if isinstance(manifest.get("num_output_shards"), int):
            expected = manifest["num_output_shards"]
    check_complete_shards(paths, where=join_path(output, subdir), expected=expected,
                          listing=listing or None, root=output)
