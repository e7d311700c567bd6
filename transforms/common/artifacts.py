"""Moves files and directories through Beam ``FileSystems``, so local paths, gs:// and mem:// all work.

ScaNN and TensorFlow save only to local disk; the pipeline publishes those local directories to the
output location with :func:`publish_dir` and workers fetch them back with :func:`fetch_dir`. Small
text files (manifest.json) go through :func:`write_text` / :func:`read_text`.

How a published directory is made to look atomic: every file is copied to its final name, then a
``_SUCCESS`` marker holding the list of files and their sizes is written *last*; :func:`fetch_dir`
refuses a directory without the marker and copies exactly the files the marker lists, checking sizes.
A temporary directory renamed into place was rejected because object stores have no directories and
``rename`` there is a per-object copy + delete, so a reader could still see half of a directory; the
marker is the one commit point that behaves the same on local disk, GCS and mem://. Republishing to
the same place first deletes the old marker. Single files (:func:`write_bytes`) are written to
``<path>.tmp-<uuid>`` and renamed, so a reader never sees half a file on local disk either.

Files are copied byte for byte (``CompressionTypes.UNCOMPRESSED``): Beam would otherwise gzip anything
named ``*.gz`` on the way up and gunzip it on the way down.

This module does not know what the directories hold and does not clean up old artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import tempfile
import uuid

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

__all__ = [
    "SUCCESS_MARKER",
    "IncompleteArtifactError",
    "publish_dir",
    "fetch_dir",
    "write_bytes",
    "read_bytes",
    "write_text",
    "read_text",
    "join_path",
]

_LOGGER = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"
_COPY_CHUNK = 8 << 20


class IncompleteArtifactError(FileNotFoundError):
    """A published directory has no ``_SUCCESS`` marker, or a listed file is missing or truncated."""


def join_path(base: str, *parts: str) -> str:
    """Joins path parts with '/', keeping a ``scheme://`` prefix intact (local paths use ``os.path``)."""
    if FileSystems.get_scheme(base) is None:
        return os.path.join(base, *parts)
    return posixpath.join(base.rstrip("/") + "/", *(p.lstrip("/") for p in parts))


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary name and a rename.

    Args:
        path: destination file, on any Beam filesystem. Parent directories are created as needed.
        data: the file's whole content.

    Raises:
        BeamIOError, OSError: the filesystem failed (transient errors are left to the runner's retry).
    """
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(data)
        FileSystems.rename([tmp], [path])
    except (BeamIOError, OSError):
        _delete_quietly(tmp)
        raise


def read_bytes(path: str) -> bytes:
    """Returns the whole content of ``path`` (any Beam filesystem), byte for byte."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    """Writes ``text`` as UTF-8 to ``path`` (see :func:`write_bytes`)."""
    write_bytes(path, text.encode("utf-8"))


def read_text(path: str) -> str:
    """Reads a UTF-8 text file from any Beam filesystem."""
    return read_bytes(path).decode("utf-8")


def _delete_quietly(path: str) -> None:
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except (BeamIOError, OSError) as e:  # cleanup only; the original error matters more
        _LOGGER.warning("could not delete temporary file %s: %s", path, e)


def _local_files(local_dir: str) -> list[str]:
    """Relative '/'-separated paths of every file under ``local_dir``, sorted."""
    found = []
    for dirpath, _, files in os.walk(local_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), local_dir)
            found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def is_local_path(path: str) -> bool:
    """True for a path on this machine's filesystem (no ``scheme://``)."""
    return "://" not in path


def staging_dir_for(dest_dir: str) -> str | None:
    """A directory to build ``dest_dir``'s files in before :func:`publish_dir` with ``move=True``:
    beside ``dest_dir`` when it is local (same filesystem, so publishing is a rename, not a copy of
    gigabytes), else None (the system temp directory)."""
    if not is_local_path(dest_dir):
        return None
    parent = os.path.dirname(os.path.abspath(dest_dir.rstrip("/")))
    os.makedirs(parent, exist_ok=True)
    return parent


def publish_dir(local_dir: str, dest_dir: str, *, move: bool = False) -> None:
    """Copies every file under a local directory to ``dest_dir``, then writes the ``_SUCCESS`` marker.

    Args:
        local_dir: an existing local directory (may be empty; subdirectories are copied too).
        dest_dir: destination directory on any Beam filesystem (local path, gs://, mem://).
        move: the files may be moved instead of copied (a rename when ``dest_dir`` is local and on
            the same filesystem; otherwise they are copied). ``local_dir`` is left to the caller.

    Raises:
        NotADirectoryError: ``local_dir`` is not a directory.
        ValueError: ``local_dir`` contains a file named ``_SUCCESS`` at its top level.
        BeamIOError, OSError: copying failed.
    """
    if not os.path.isdir(local_dir):
        raise NotADirectoryError(f"not a local directory: {local_dir}")
    files = _local_files(local_dir)
    if SUCCESS_MARKER in files:
        raise ValueError(f"{local_dir} already contains a {SUCCESS_MARKER} file")
    marker = join_path(dest_dir, SUCCESS_MARKER)
    # An old marker would vouch for files that are about to be overwritten: withdraw it first.
    if FileSystems.exists(marker):
        FileSystems.delete([marker])
    sizes = {}
    for rel in files:
        src = os.path.join(local_dir, *rel.split("/"))
        sizes[rel] = os.path.getsize(src)
        if move and is_local_path(dest_dir):
            dst = os.path.join(dest_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.replace(src, dst)
                continue
            except OSError:  # another filesystem: copy below
                pass
        with open(src, "rb") as fin, FileSystems.create(
                join_path(dest_dir, *rel.split("/")), compression_type=CompressionTypes.UNCOMPRESSED) as fout:
            shutil.copyfileobj(fin, fout, _COPY_CHUNK)
    write_text(marker, json.dumps({"files": sizes}, sort_keys=True, indent=1))
    _LOGGER.info("published %d files from %s to %s", len(sizes), local_dir, dest_dir)


def _read_marker(src_dir: str) -> dict[str, int]:
    marker = join_path(src_dir, SUCCESS_MARKER)
    if not FileSystems.exists(marker):
        raise IncompleteArtifactError(f"{src_dir} is incomplete or was never published: no {SUCCESS_MARKER}")
    try:
        sizes = json.loads(read_text(marker))["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise IncompleteArtifactError(f"unreadable {marker}: {e}") from e
    for rel in sizes:
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or "" in parts:
            raise IncompleteArtifactError(f"{marker} lists an unsafe path {rel!r}")
    return {str(k): int(v) for k, v in sizes.items()}


def fetch_dir(src_dir: str, local_dir: str | None = None) -> str:
    """Copies a directory published by :func:`publish_dir` to local disk.

    Args:
        src_dir: the published directory on any Beam filesystem.
        local_dir: where to put the files (created if missing); default: a new temporary directory,
            which the caller owns and may delete.

    Returns:
        The local directory holding exactly the files the ``_SUCCESS`` marker lists.

    Raises:
        IncompleteArtifactError: no marker, or a listed file is missing or has the wrong size.
        BeamIOError, OSError: copying failed.
    """
    sizes = _read_marker(src_dir)
    if local_dir is None:
        local_dir = tempfile.mkdtemp(prefix="corpus_matcher_artifact_")
    os.makedirs(local_dir, exist_ok=True)
    for rel, size in sorted(sizes.items()):
        src = join_path(src_dir, *rel.split("/"))
        dst = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            with FileSystems.open(src, compression_type=CompressionTypes.UNCOMPRESSED) as fin, \
                    open(dst, "wb") as fout:
                shutil.copyfileobj(fin, fout, _COPY_CHUNK)
        except FileNotFoundError as e:
            raise IncompleteArtifactError(f"{src} is listed in {SUCCESS_MARKER} but missing") from e
        except BeamIOError as e:
            if not FileSystems.exists(src):
                raise IncompleteArtifactError(f"{src} is listed in {SUCCESS_MARKER} but missing") from e
            raise
        got = os.path.getsize(dst)
        if got != size:
            raise IncompleteArtifactError(f"{src} has {got} bytes, {SUCCESS_MARKER} says {size}")
    return local_dir
