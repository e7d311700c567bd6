"""The configuration error type, for every layer that checks what a user gave.

``beam_jobs.config`` raises it for flags and re-exports it; modules under ``transforms/`` that check a
user's paths before a pipeline runs (``transforms.common.run_dir``) raise it too, without importing the
launcher's layer. The console turns it into exit code 2 and one line.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A flag is missing, malformed or inconsistent with another flag (or names an unusable path)."""
