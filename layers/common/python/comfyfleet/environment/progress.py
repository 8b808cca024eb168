"""Node setup's progress: one line per part, with a spinner on a terminal when rich is there."""

from __future__ import annotations

from typing import Any, TextIO


def line(part: str, outcome: str) -> str:
    return f"{part}: {outcome}"


class PlainProgress:
    """A line per part as it finishes; nothing while it works (logs, pipes, no rich)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def working(self, part: str, doing: str) -> None:
        pass

    def done(self, part: str, outcome: str) -> None:
        print(line(part, outcome), file=self._stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """The same lines, with a spinner saying what the current part is doing."""

    def __init__(self, console: Any) -> None:
        self._console = console
        self._status: Any = None

    def working(self, part: str, doing: str) -> None:
        text = f"{part}: {doing}…"
        if self._status is None:
            self._status = self._console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def done(self, part: str, outcome: str) -> None:
        self.close()
        self._console.print(line(part, outcome), markup=False, highlight=False)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def terminal_progress(stream: TextIO) -> PlainProgress | RichProgress:
    """Rich's spinner on a terminal when the cli extra is installed; plain lines otherwise."""
    if not stream.isatty():
        return PlainProgress(stream)
    try:
        from rich.console import Console  # the cli extra; a GPU node may not have it
    except ImportError:
        return PlainProgress(stream)
    return RichProgress(Console(file=stream))
