"""One structured line per event on stderr (the journal adds time and unit).

Messages are written as `event=... key=value` by the callers; this module only adds the level
and, when stderr is not the journal, a timestamp. Secrets never reach a log call: the config
holds only paths to secret files, and read_secret_file's result is passed straight to children.
"""

from __future__ import annotations

import logging
import os
import sys


class _Formatter(logging.Formatter):
    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = f"level={record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            line += " exception=" + repr(self.formatException(record.exc_info))
        if self.journal:
            return line
        stamp = self.formatTime(record, '%Y-%m-%dT%H:%M:%S')
        return f"{stamp}.{int(record.msecs):03d} {line}"


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
