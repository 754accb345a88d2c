"""redact = "env": the template keeps keys, comments and blank lines, and no value ever."""

from __future__ import annotations

import pytest

from kbackup.sources.files.redact import REDACTED_LINE, redact_env

SECRETS = [b"s3cr3t-db", b"sk_live_42", b"quoted value", b"single q", b"line two", b"PEMBODY",
           b"hunter2", b"after-hash", b"tab\tsep", b"not-an-assignment", b"utf8-\xc3\xa9t\xc3\xa9"]

ENV = b"""# Shop settings
DATABASE_URL=postgres://shop:s3cr3t-db@localhost/shop

export STRIPE_KEY=sk_live_42
  SPACED = "quoted value"
SINGLE='single q'  # trailing comment
MULTI="line one
line two
# PEMBODY looks like a comment
"
AFTER=hunter2
EMPTY=
HASH=after-hash#x
TABBED\t=\ttab\tsep
not-an-assignment
UTF8=utf8-\xc3\xa9t\xc3\xa9
"""

TEMPLATE = b"""# Shop settings
DATABASE_URL=***

export STRIPE_KEY=***
  SPACED=***
SINGLE=***
MULTI=***
AFTER=***
EMPTY=***
HASH=***
TABBED=***
# (redacted line)
UTF8=***
"""


def test_every_assignment_becomes_key_equals_stars() -> None:
    out = redact_env(ENV)
    assert out == TEMPLATE
    for secret in SECRETS:
        assert secret not in out, secret


def test_crlf_and_missing_final_newline_are_kept() -> None:
    assert redact_env(b"# c\r\nA=1\r\n\r\nB=2") == b"# c\r\nA=***\r\n\r\nB=***"


@pytest.mark.parametrize("line", [b"-----BEGIN PRIVATE KEY-----", b"just-a-value", b"KEY: v",
                                  b"=starts-with-equals", b"1KEY=digit-first", b"KEY"])
def test_a_line_that_is_no_assignment_is_replaced_whole(line: bytes) -> None:
    assert redact_env(b"A=1\n" + line + b"\n") == b"A=***\n" + REDACTED_LINE + b"\n"


def test_an_escaped_quote_does_not_end_a_double_quoted_value() -> None:
    data = b'A="one \\" still-secret\nsecond-line"\nB=2\n'
    assert redact_env(data) == b"A=***\nB=***\n"


def test_a_quote_never_closed_drops_the_rest() -> None:
    assert redact_env(b"A=1\nB='open\nC=leak\n# leak\n") == b"A=***\nB=***\n"


def test_a_closed_quote_on_one_line_does_not_open_anything() -> None:
    assert redact_env(b"A='x'\nB=\"y\"\nC=`z`\nD=2\n") == b"A=***\nB=***\nC=***\nD=***\n"


def test_a_commented_out_assignment_keeps_its_key_only() -> None:
    data = b"# OLD_PASSWORD=hunter2\n  #X = y=z\n# plain comment\n"
    assert redact_env(data) == b"# OLD_PASSWORD=***\n  #X =***\n# plain comment\n"


PEM_BODY = [b"MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu",
            b"KUpRKfFLfRYC9AIKjbJTWit", b"QwECAwEAAQ==", b"# in-block=comment"]


def test_an_unquoted_pem_block_is_redacted_line_by_line() -> None:
    body = b"\n".join(PEM_BODY)
    data = (b"KEY=-----BEGIN RSA PRIVATE KEY-----\n" + body + b"\n-----END RSA PRIVATE KEY-----\n"
            b"-----BEGIN CERT-----\n" + body + b"\n-----END CERT-----\nNEXT=1\n")
    marker = REDACTED_LINE + b"\n"
    assert redact_env(data) == b"KEY=***\n" + marker * 5 + marker * 6 + b"NEXT=***\n"
