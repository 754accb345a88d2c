"""`redact = "env"`: an env file reduced to a template, on the server, before it is archived.

Every assignment `KEY=value` (with or without `export `, spaces around `=`, quoted values,
quoted values running over several lines) becomes `KEY=***`; blank lines stay, and comments
too, cut after their first `=` (a commented-out assignment, `# OLD_KEY=...`, is where old
secrets hide: it keeps its key, as `sed 's/=.*/=***/'` would). Any other line could be a value
(a continued line, a pasted key) and is replaced whole by REDACTED_LINE, as is every line of a
PEM block (`-----BEGIN ...` to `-----END ...`) outside quotes. Works on bytes: a file in any
encoding keeps its keys and never its values. Line endings (LF or CRLF) are kept.
"""

from __future__ import annotations

import re

REDACTED_LINE = b"# (redacted line)"
MASK = b"***"
_ASSIGNMENT = re.compile(rb"^([ \t]*)(export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=(.*)$",
                         re.DOTALL)


def _closing_quote(text: bytes, quote: int) -> int:
    """Where `text` (after an opening quote) closes it, or -1; `\\` escapes in "..." only."""
    escaped = False
    for i, byte in enumerate(text):
        if escaped:
            escaped = False
        elif byte == 0x5C and quote == 0x22:  # backslash inside double quotes
            escaped = True
        elif byte == quote:
            return i
    return -1


def _opens_quote(value: bytes) -> int | None:
    """The quote a value opens and does not close on its line (a multi-line value), if any."""
    value = value.lstrip(b" \t")
    if not value or value[0] not in b"\"'`":
        return None
    quote = value[0]
    return quote if _closing_quote(value[1:], quote) < 0 else None


def _split_ending(line: bytes) -> tuple[bytes, bytes]:
    for ending in (b"\r\n", b"\n", b"\r"):
        if line.endswith(ending):
            return line[: -len(ending)], ending
    return line, b""


def _begins_pem(text: bytes) -> bool:
    return b"-----BEGIN " in text and b"-----END " not in text


def _comment(line: bytes) -> bytes:
    before, equals, _ = line.partition(b"=")
    return before + equals + (MASK if equals else b"")


def redact_env(data: bytes) -> bytes:
    """The template of an env file: keys, comments and blank lines; no value, ever."""
    out: list[bytes] = []
    open_quote: int | None = None
    in_pem = False
    for raw in data.splitlines(keepends=True):
        line, ending = _split_ending(raw)
        if open_quote is not None:  # inside a multi-line value: the line is value, dropped
            if _closing_quote(line, open_quote) >= 0:
                open_quote = None
            continue
        stripped = line.strip(b" \t")
        match = _ASSIGNMENT.match(line)
        if in_pem:  # a key pasted unquoted: every line of it, up to its END line
            in_pem = b"-----END " not in line
            out.append(REDACTED_LINE)
        elif not stripped:
            out.append(line)
        elif stripped.startswith(b"#"):
            out.append(_comment(line))
        elif match:
            indent, export, key, value = match.groups()
            out.append(indent + (export or b"") + key + b"=" + MASK)
            open_quote = _opens_quote(value)
            in_pem = open_quote is None and _begins_pem(value)
        else:
            out.append(REDACTED_LINE)
            in_pem = _begins_pem(line)
        out[-1] += ending
    return b"".join(out)
