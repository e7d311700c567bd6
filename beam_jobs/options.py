"""The match job's flags as Beam ``PipelineOptions`` (``MatchOptions``), ``--help`` text and the README
table, all generated from the one typed table ``transforms.common.flags.JOB_FLAGS`` (re-exported here).

Each :class:`~transforms.common.flags.Flag` has its type, real default (or a named derived one, e.g. ScaNN
leaves from shard size), choices, range and help; :mod:`beam_jobs.config` parses the values with the
specs and checks the cross-field rules. Flex Templates pass every value as a string (``'false'``,
``'10'``), so MatchOptions declares them untyped and config parses them.

Importing this module does not import Beam: ``--help``, the template commands and the README table
read ``JOB_FLAGS`` only. ``MatchOptions`` (a ``PipelineOptions`` subclass) is defined on first use, and
:func:`check_known_flags` (which parses a command line the way Beam does) imports Beam when called.
"""

from __future__ import annotations

import textwrap

from transforms.common.flags import FLAG_GROUPS, JOB_FLAGS, Flag

__all__ = ["MatchOptions", "JOB_FLAGS", "Flag", "FLAG_GROUPS", "check_known_flags", "flags_help",
           "flags_markdown", "suggest_flag"]


def _define_match_options():
    from apache_beam.options.pipeline_options import PipelineOptions

    class MatchOptions(PipelineOptions):
        """Flags of the match job (see ``JOB_FLAGS``; the README lists them too)."""

        @classmethod
        def _add_argparse_args(cls, parser):
            for flag in JOB_FLAGS:  # raw strings (None when not given): config parses them
                flag.add_to(parser, typed=False)

    MatchOptions.__module__, MatchOptions.__qualname__ = __name__, "MatchOptions"  # picklable by name
    return MatchOptions


MatchOptions: type  # made by _match_options on first use (an annotation binds no name: PEP 562)


def _match_options():
    """MatchOptions, made once: a module global from then on, found among Beam's option classes."""
    cls = globals().get("MatchOptions")
    if cls is None:
        cls = globals()["MatchOptions"] = _define_match_options()
    return cls


def __getattr__(name: str):
    # PEP 562: MatchOptions subclasses Beam's PipelineOptions, so it is made on first use.
    if name == "MatchOptions":
        return _match_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flags_help(width: int = 100) -> str:
    """The job flags for ``corpus-match --help``: by group, each with its choices and default."""
    lines = []
    for group in [*FLAG_GROUPS, "Other"]:
        flags = [f for f in JOB_FLAGS if f.group == group]  # (every flag has a group: tests check)
        if not flags:
            continue
        lines += ["", f"{group}:"]
        for flag in flags:
            head = f"  --{flag.name}" + (f" {{{','.join(flag.values)}}}" if flag.values else "")
            lines.append(head)
            lines += textwrap.wrap(flag.full_help, width=width, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)
    return "\n".join(lines[1:])


def suggest_flag(name: str, known: list[str]) -> str | None:
    """The known flag ``name`` (``--x``) was most likely meant to be: the job's flags first, then
    ``known`` (every Beam flag); '-' for '_' counts as the same flag. None when nothing is close."""
    import difflib

    job = [f"--{f.name}" for f in JOB_FLAGS]
    normalised = "--" + name.lstrip("-").replace("-", "_")
    for pool in (job, known):
        if normalised in pool:
            return normalised
        close = difflib.get_close_matches(normalised, pool, n=1, cutoff=0.75)
        if close:
            return close[0]
    return None


def _runner_of(argv: list[str]) -> str | None:
    runner = None
    for i, arg in enumerate(argv):
        if arg == "--runner" and i + 1 < len(argv):
            runner = argv[i + 1]
        elif arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
    return runner


def check_known_flags(argv: list[str]) -> None:
    """Parses ``argv`` as Beam will (every registered PipelineOptions class, the job's included) and
    raises ConfigError naming the first problem: a flag no options class declares (with the likely
    intended flag), a stray value, or a value argparse rejects (a choice, a type, a missing value).

    Beam itself only logs a warning for unknown flags and runs with defaults; a misspelled job flag
    must not do that. A runner named by ``--runner`` is loaded first, so its own flags are known.
    """
    import argparse

    from apache_beam.options import pipeline_options
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_jobs.config import ConfigError

    _match_options()  # registered with Beam's option classes
    base = getattr(pipeline_options, "_BeamArgumentParser", argparse.ArgumentParser)

    class _StrictParser(base):
        def error(self, message):  # argparse would print its usage and exit
            raise ConfigError(message)

    runner = _runner_of(argv)
    if runner:
        from apache_beam.runners.runner import create_runner

        try:
            create_runner(runner)  # imports the runner's module, which declares its options
        except ValueError as e:
            raise ConfigError(f"--runner {runner}: {e}") from None
    parser = _StrictParser(allow_abbrev=False, add_help=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():  # as PipelineOptions.get_all_options does
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's documented extension point
    _, unknown = parser.parse_known_args(argv)
    known = sorted(s for action in parser._actions for s in action.option_strings)  # noqa: SLF001
    problems = []
    after_flag = False
    for arg in unknown:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            hint = suggest_flag(name, known)
            problems.append(f"unknown flag {name}" + (f" (did you mean {hint}?)" if hint else ""))
            after_flag = "=" not in arg
        elif after_flag:  # the value of the unknown flag before it
            after_flag = False
        else:
            problems.append(f"unexpected argument {arg!r} (flags are --name value)")
    if problems:
        raise ConfigError("; ".join(problems) + " (corpus-match --help lists the job's flags)")


def flags_markdown() -> str:
    """The README's flag table rows, from JOB_FLAGS (``python -m beam_jobs.options``)."""
    rows = []
    for flag in JOB_FLAGS:
        choice_text = f" One of: {', '.join(flag.values)}." if flag.values else ""
        rows.append(f"| `--{flag.name}` | {flag.full_help}{choice_text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(flags_markdown())
