"""The one exception the configuration code raises for bad input."""

from __future__ import annotations

from typing import Optional


class ConfigError(Exception):
    """A problem a person must fix in hsflowd.conf, as one line: ``FILE:LINE: what is wrong``.

    ``line`` is None only when no line applies (the file cannot be read at all); the
    message is then ``FILE: what is wrong``.
    """

    def __init__(self, path: str, line: Optional[int], message: str):
        self.path = path
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"
