"""Loads ScaNN's pybind searcher without running ``scann/__init__.py``.

Why: under the TensorFlow this project pins (2.21), ``import scann`` fails. scann 1.4.2's package
``__init__`` imports its TensorFlow custom-op library, which was built against an older TF and dies
with an undefined absl symbol (a ``NotFoundError`` that its ``except ModuleNotFoundError`` does not
catch). The pybind searcher (``scann.scann_ops.py.scann_ops_pybind``) links to nothing from TF, so we
register a bare ``scann`` package (its ``__path__`` only, ``__init__`` not executed) in
``sys.modules`` and import the pybind modules beneath it.

What it does not do: expose the TF-op searcher, or the top-level names of ``scann/__init__.py``
(``scann.ScannBuilder``...). Once this has run, a later ``import scann`` in the same process returns
the bare package; use the modules this returns instead.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sys
import threading
import types

__all__ = ["load_scann_pybind", "INSTALL_HINT"]

_LOGGER = logging.getLogger(__name__)

INSTALL_HINT = "pip install scann==1.4.2"
# Beam may call setup() on several DoFn threads at once; import under one lock.
_LOCK = threading.Lock()


@functools.cache
def load_scann_pybind() -> types.ModuleType:
    """Returns ``scann.scann_ops.py.scann_ops_pybind``, importing it once per process.

    The module exposes ``builder(db, num_neighbors, distance_measure)`` (a ``ScannBuilder`` whose
    ``build()`` returns a pybind ``ScannSearcher``) and ``load_searcher(dir)``.

    Raises:
        ImportError: scann is not installed (the message says how to install it).
    """
    with _LOCK:
        package = sys.modules.get("scann")
        if package is None:
            spec = importlib.util.find_spec("scann")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError(f"ScaNN is not installed; run `{INSTALL_HINT}`")
            # module_from_spec sets __path__/__spec__ but, unlike import, does not run __init__.py.
            package = importlib.util.module_from_spec(spec)
            sys.modules["scann"] = package
            _LOGGER.debug("Registered bare scann package from %s", list(spec.submodule_search_locations))
        try:
            pybind = importlib.import_module("scann.scann_ops.py.scann_ops_pybind")
        except ImportError as e:
            raise ImportError(f"ScaNN pybind searcher failed to import ({e}); reinstall with "
                              f"`{INSTALL_HINT}`") from e
        return pybind
