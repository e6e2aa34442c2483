"""One console factory for every command: rich for a person at a terminal, whole lines for
logs, pipes and CI.

rich wraps text at the console width and drops the space at each break, so a message with
a long path written to a log came out split in two, depending on the path's length and on
``COLUMNS``; grep and the tests lost it. Here a message is never wrapped or cut by us: on a
terminal the terminal folds long lines itself (``soft_wrap``); elsewhere the width is
:data:`PIPE_WIDTH`, so tables keep their natural width whatever ``COLUMNS`` says. Text that
comes from outside (paths, error messages) goes through :func:`escape` so that brackets in
it (``[t]``, ``[0.5, 1]``) are printed, not read as rich markup.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape as _escape

PIPE_WIDTH = 10_000
"""Console width when the stream is not a terminal: wider than any line we print."""


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (results) or stderr (progress, warnings, errors).

    Make it when the command runs, not at import: the decision follows the stream in
    place then (``CliRunner`` and pytest swap ``sys.stdout``/``sys.stderr``).
    """
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: treat as a pipe
        tty = False
    return Console(
        stderr=stderr,
        soft_wrap=True,  # print() never inserts line breaks
        width=None if tty else PIPE_WIDTH,
        emoji=False,  # ':cat:' in a file name stays ':cat:'
    )


def echo(message: str, *, err: bool = False) -> None:
    """Print one message (rich markup allowed; :func:`escape` the parts that are data)."""
    console(stderr=err).print(message)


def escape(text: object) -> str:
    """``text`` as a string that rich prints verbatim (brackets included)."""
    return _escape(str(text))


def plain_warnings() -> None:
    """Python warnings as ``warning: <message>`` lines, as the commands print their own:
    the default format adds the library's file, line number and source line (a batch
    worker's polarity warning came out as ``.../infer.py:308: UserWarning: ...`` and then
    ``probs[passed, :-1] = model.predict(...)``). For the commands and their workers."""
    import warnings

    def one_line(message: Warning | str, *_: object, **__: object) -> str:
        return f"warning: {message}\n"

    warnings.formatwarning = one_line  # type: ignore[assignment]
