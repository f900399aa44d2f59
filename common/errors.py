"""Bad-input errors that name the file and the problem, reported on one line."""

from __future__ import annotations

import sys
from types import TracebackType


class InputError(ValueError):
    """Bad input data or checkpoint; the message is ``"<file>: <problem>"``."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message, or its type name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The first :class:`InputError` in ``exc``'s chain of causes, or ``None``.

    MONAI wraps transform and config errors in ``RuntimeError``s; the original stays in the chain.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def brief_message(error: InputError) -> str:
    """One line for ``error``. An error re-raised from a DataLoader worker carries the worker's
    traceback in its message; its last line is the original message."""
    last = str(error).strip().splitlines()[-1]
    prefix = f"{InputError.__module__}.{InputError.__name__}: "
    return last[len(prefix) :] if last.startswith(prefix) else last


def report_input_errors_briefly() -> None:
    """Make an uncaught error caused by bad input print ``error: <file>: <problem>`` instead of a
    traceback (exit status stays 1); every other error keeps its full traceback."""
    previous_hook = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        input_error = find_input_error(exc)
        if input_error is None:
            previous_hook(exc_type, exc, tb)
        else:
            print(f"error: {brief_message(input_error)}", file=sys.stderr)

    if getattr(sys.excepthook, "__qualname__", "") != hook.__qualname__:
        sys.excepthook = hook
