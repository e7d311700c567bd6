"""The ``corpus-match`` console script: the match job by default, plus subcommands.

``corpus-match [job flags]`` runs the match job (see beam_jobs/options.py);
``corpus-match evaluate ...`` scores a run's matches against truth pairs;
``corpus-match template ...`` prints (or runs) the Dataflow Flex Template commands.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

_SUBCOMMANDS = ("evaluate", "template")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _SUBCOMMANDS:
        command, rest = argv[0], argv[1:]
        if command == "evaluate":
            from transforms.evaluate import evaluate_main

            return evaluate_main(rest)
        from beam_jobs.template_cli import template_main

        return template_main(rest)
    from beam_jobs.match_corpora import main as match_main

    return match_main(argv)


if __name__ == "__main__":
    sys.exit(main())
