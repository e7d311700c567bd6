"""An in-memory ``mem://`` Beam filesystem for tests (import this module to register it).

Beam 2.77's Python SDK ships no in-memory filesystem (the Java SDK has one), so this registers a
small one for scheme ``mem`` (Beam finds FileSystem subclasses by scheme when they are imported). It is
only defined when no other ``mem`` filesystem is registered, since two would make Beam refuse the scheme.
"""

from __future__ import annotations

import io
import posixpath
import threading

from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem


def _mem_filesystems() -> list[type]:
    return [fs for fs in FileSystem.get_all_subclasses() if fs.scheme() == "mem"]


if not _mem_filesystems():

    class _Reader(io.BytesIO):
        mode = "rb"  # CompressedFile checks it

    class _InMemoryFileSystem(FileSystem):
        """Files as bytes in one process-wide dict; no directories (like an object store)."""

        _FILES: dict[str, bytes] = {}
        _LOCK = threading.Lock()

        @classmethod
        def scheme(cls):
            return "mem"

        def join(self, basepath, *paths):
            return posixpath.join(basepath.rstrip("/") + "/", *(p.lstrip("/") for p in paths))

        def split(self, path):
            head, _, tail = path.rpartition("/")
            return head, tail

        def mkdirs(self, path):
            pass

        def has_dirs(self):
            return False

        def _list(self, dir_or_prefix):
            with self._LOCK:
                items = [(p, len(d)) for p, d in self._FILES.items() if p.startswith(dir_or_prefix)]
            for path, size in items:
                yield FileMetadata(path, size, 0.0)

        def create(self, path, mime_type="application/octet-stream",
                   compression_type=CompressionTypes.AUTO):
            files, lock = self._FILES, self._LOCK

            class _Writer(io.BytesIO):
                mode = "wb"  # CompressedFile checks it

                def close(self):
                    if not self.closed:
                        with lock:
                            files[path] = self.getvalue()
                    super().close()

            compression_type = FileSystem._get_compression_type(path, compression_type)
            writer = _Writer()
            if compression_type == CompressionTypes.UNCOMPRESSED:
                return writer
            return CompressedFile(writer, compression_type=compression_type)

        def open(self, path, mime_type="application/octet-stream",
                 compression_type=CompressionTypes.AUTO):
            with self._LOCK:
                if path not in self._FILES:
                    raise FileNotFoundError(path)
                reader = _Reader(self._FILES[path])
            compression_type = FileSystem._get_compression_type(path, compression_type)
            if compression_type == CompressionTypes.UNCOMPRESSED:
                return reader
            return CompressedFile(reader, compression_type=compression_type)

        def copy(self, source_file_names, destination_file_names):
            with self._LOCK:
                for src, dst in zip(source_file_names, destination_file_names, strict=True):
                    self._FILES[dst] = self._FILES[src]

        def rename(self, source_file_names, destination_file_names):
            with self._LOCK:
                missing = {s: FileNotFoundError(s) for s in source_file_names if s not in self._FILES}
                if missing:
                    raise BeamIOError("Rename operation failed", missing)
                for src, dst in zip(source_file_names, destination_file_names, strict=True):
                    self._FILES[dst] = self._FILES.pop(src)

        def exists(self, path):
            with self._LOCK:
                return path in self._FILES or any(p.startswith(path.rstrip("/") + "/") for p in self._FILES)

        def size(self, path):
            with self._LOCK:
                return len(self._FILES[path])

        def last_updated(self, path):
            return 0.0

        def checksum(self, path):
            return str(self.size(path))

        def metadata(self, path):
            return FileMetadata(path, self.size(path), 0.0)

        def delete(self, paths):
            with self._LOCK:
                for path in paths:
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in self._FILES if p == path or p.startswith(prefix)]
                    if not doomed:
                        raise BeamIOError("Delete operation failed", {path: FileNotFoundError(path)})
                    for p in doomed:
                        del self._FILES[p]
