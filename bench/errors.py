"""Errors a researcher can act on.

Every failure the CLI reports is a :class:`MetabenchError`: one line saying what is wrong and, when
there is one, how to fix it. The CLI prints it and exits with code 2, never with a traceback.
"""

from __future__ import annotations


class MetabenchError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``hint`` how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class SpecError(MetabenchError):
    """A registry spec is malformed: the message names the file and the key."""


class UnknownNameError(MetabenchError):
    """An unknown paper, benchmark or profile; the hint offers the closest names."""


class DataError(MetabenchError):
    """A dataset is missing, truncated or corrupt."""


class ResultError(MetabenchError):
    """A result file does not match the result schema."""


class InterruptedRun(MetabenchError):
    """A run stopped before it finished (Ctrl-C, ``--stop-after``); its checkpoint lets ``--resume``
    continue it. Exit code 130, the shell's code for SIGINT."""

    exit_code = 130


class TerminatedRun(InterruptedRun):
    """A run stopped by SIGTERM (a scheduler's pre-emption), checkpointed like Ctrl-C. Exit code 143,
    the shell's code for SIGTERM, so a job script can tell pre-emption from a user's interrupt."""

    exit_code = 143


def did_you_mean(name: str, choices: list[str]) -> str:
    """A hint naming the closest known names, or listing them all when none is close."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "known: " + ", ".join(sorted(choices))
