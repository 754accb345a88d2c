"""What each API endpoint accepts: one pydantic model per request body or query string.

Handlers read their input only through `body_of(request, Model)` and `query_of(request,
Model)`; anything else (a wrong type, a missing or unknown field, a non-object body, a number
out of range, an over-long string, a NUL, JSON nested too deep) is a 400 whose message names
the field and says what is expected, e.g. "limit: expected an integer between 1 and 10000".
The same models are the request schemas of the OpenAPI document (api/openapi.py).

Bodies are strict (JSON types as declared: no list turned into a string, no "1" taken for 1);
query strings are text by nature, so numbers and booleans there are parsed from it.

A new endpoint declares its model here and calls the helper first thing:

    class PauseBody(Body):
        reason: Text | None = None

    async def post_pause(request):
        body = await body_of(request, PauseBody)
"""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from kbackup.errors import Invalid
from kbackup.verify_levels import VerifyLevel

MAX_BODY_BYTES = 1024 * 1024  # client_max_size of the app: a larger body is a JSON 413
MAX_JSON_DEPTH = 32  # nesting of a request body; every real body is 1 or 2 deep
MAX_PAGE = 10_000  # the largest `limit` of a listing

NO_NUL = r"^[^\x00]*$"
# A name from the configuration or the catalog: a job, a target, a channel, a backup id.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
# A PostgreSQL identifier (a database or table name, at most 63 bytes in PostgreSQL).
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
# Free text a person typed (a reason).
Text = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NO_NUL)]
# A path on the daemon's machine.
FsPath = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NO_NUL)]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE, description="at most this many items")]
# A backup's user label or schedule tag (kbackup.labels holds the same rule for the CLI).
LABEL_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
LABEL_RULE = "1-64 characters of A-Z a-z 0-9 . _ -"
Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]
# How long: a duration like "2h" or "1h30m", or seconds.
Duration = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)] | \
    Annotated[int, Field(ge=1, le=3650 * 86400)]
Offset = Annotated[int, Field(ge=0, le=10**9, description="skip this many items first")]

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """A JSON request body: an object with exactly the declared fields, strictly typed."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class Query(BaseModel):
    """Query parameters: the declared ones only, parsed from their text."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------- bodies


class EmptyBody(Body):
    """Nothing to say: no body, or {}."""


class VerifyBody(Body):
    level: VerifyLevel = "checksum"


class RunBody(Body):
    label: Label | None = Field(None, description=f"a user label: {LABEL_RULE}")
    force: bool = Field(False, description="run a paused job anyway")


class PauseBody(Body):
    reason: Text | None = None
    for_: Duration | None = Field(None, alias="for", description="a duration like '2h', or"
                                  " seconds; the pause ends by itself then")
    for_seconds: Annotated[int, Field(ge=1, le=3650 * 86400)] | None = None


class DeleteOptions(BaseModel):
    """DELETE /v1/backups/{id}: from the query string (text parsed) or a JSON body (strict)."""

    target: Name | None = Field(None, description="delete only the copy on this target")
    force: bool = Field(False, description="also the newest complete backup, or below min_keep")
    dry_run: bool = Field(False, description="say what would go, delete nothing")
    reason: Text | None = Field(None, description="why (kept in the audit trail)")


class DeleteBody(DeleteOptions, Body):
    pass


class SigningKeyBody(Body):
    public_key_pem: Annotated[str, StringConstraints(min_length=1, max_length=10_000,
                                                     pattern=NO_NUL)] = Field(
        description="an Ed25519 public key in PEM (`kbackupctl keys export-signing` of the"
                    " server that signed the backups)")


class RescanBody(Body):
    all_hosts: bool = Field(False, description="also the other hosts' backups beside this"
                            " host's prefix in a shared bucket (read-only)")


class PruneBody(Body):
    dry_run: bool = False


class StorageCheckBody(Body):
    target: Name | None = None


class SilenceBody(Body):
    match: Name
    for_: Duration = Field(alias="for",
                           description="a duration like '2h', '1h30m', '14d', or seconds")
    reason: Text


class UnsilenceBody(Body):
    match: Name


class AlertTestBody(Body):
    channel: Name | None = None


class ReportSendBody(Body):
    channel: Name
    since: Duration = Field("7d", description="the report's window: a duration like '7d',"
                            " or seconds")


class RestoreBody(Body):
    """POST /v1/restores; jobs/restore_plan.RestoreRequest is built from it."""

    backup: Name = Field(description="a backup id, or 'latest' (with job)")
    job: Name | None = None
    component: Name | None = None
    to_database: Identifier | None = None
    tables: Annotated[list[Identifier], Field(max_length=10_000)] = []
    schema_only: bool = False
    data_only: bool = False
    no_owner: bool = False
    with_globals: bool = False
    all_databases: bool = Field(False, description="every database component to its own"
                                " name, globals first (onto a new server: restore_dsn)")
    clean: bool = False
    files_to: FsPath | None = None
    to_path: FsPath | None = Field(None, description="a SQLite database to this new file")
    in_place: bool = False
    no_safety_backup: bool = False
    no_hooks: bool = Field(False, description="skip the job's before_restore and"
                           " after_restore hooks")
    force: bool = False
    force_open: bool = Field(False, description="replace a SQLite file a process has open")
    gpg_homedir: FsPath | None = None
    passphrase_file: FsPath | None = None
    dry_run: bool = False
    yes: bool = False


# A token's or web user's name (kbackup.access checks nothing else about it).
AccountName = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]
AccountRole = Literal["viewer", "admin"]


class TokenBody(Body):
    """POST /v1/tokens: the new token is in the answer, once."""

    name: AccountName = Field(description=f"the token's name: {LABEL_RULE}")
    role: AccountRole = Field(description="viewer reads; admin may also change things")
    expires: Duration | None = Field(None, description="a lifetime like '90d', or seconds;"
                                     " none: until revoked")


class WebUserBody(Body):
    """POST /v1/web/users: a web login for the TCP listener (the password is hashed)."""

    name: AccountName = Field(description=LABEL_RULE)
    role: AccountRole
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=NO_NUL)]
    replace: bool = Field(False, description="set a new password and role for an existing"
                          " user (and end their sessions)")


# ---------------------------------------------------------------------- query strings


class JobQuery(Query):
    job: Name | None = None


class BackupsQuery(Query):
    job: Name | None = None
    label: Label | None = Field(None, description="a schedule tag or a user label")
    status: Literal["running", "complete", "partial", "failed", "corrupt"] | None = None
    limit: Limit = 50
    offset: Offset = 0


class PageQuery(Query):
    job: Name | None = None
    limit: Limit = 50
    offset: Offset = 0


class DeleteQuery(DeleteOptions, Query):
    pass


class AuditQuery(PageQuery):
    pass


class ReportQuery(Query):
    since: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)] = \
        Field("7d", description="the report's window, up to now: a duration like '7d'")


class RunQuery(Query):
    wait: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False,
                                 description="answer when the run ends, after at most this"
                                 " many seconds (capped at 10)")] = 0


# ---------------------------------------------------------------------- reading them


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def _schema_at(schema: dict[str, Any], loc: tuple[int | str, ...]) -> dict[str, Any] | None:
    """The JSON schema of the value at `loc` (field names and list indexes)."""
    node: dict[str, Any] | None = schema
    for part in loc:
        if node is None:
            return None
        node = _plain(node, schema)
        if isinstance(part, int):
            node = node.get("items")
        else:
            node = (node.get("properties") or {}).get(part)
    return _plain(node, schema) if node is not None else None


def _plain(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Resolve a local $ref, and an optional (anyOf with null) to its non-null variant."""
    if "$ref" in node:
        node = root.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1], node)
    variants = [v for v in node.get("anyOf", []) if v.get("type") != "null"]
    if len(variants) == 1:
        node = {**variants[0], **{k: v for k, v in node.items() if k != "anyOf"}}
    return node


def expected(node: dict[str, Any] | None) -> str:
    """What a value must look like, in words, from its JSON schema."""
    if node is None:
        return "a valid value"
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    if "anyOf" in node:
        return " or ".join(expected(v) for v in node["anyOf"] if v.get("type") != "null")
    kind = node.get("type")
    if kind == "integer" or kind == "number":
        word = "an integer" if kind == "integer" else "a number"
        low, high = node.get("minimum"), node.get("maximum")
        if low is not None and high is not None:
            return f"{word} between {_num(low)} and {_num(high)}"
        if low is not None:
            return f"{word} of at least {_num(low)}"
        return word
    if node.get("pattern") == LABEL_PATTERN:
        return LABEL_RULE
    if kind == "string":
        low, high = node.get("minLength", 0), node.get("maxLength")
        text = "a non-empty string" if low else "a string"
        if high is not None:
            text += f" of at most {high} characters"
        if node.get("pattern") == NO_NUL:
            text += " without NUL"
        return text
    if kind == "boolean":
        return "true or false"
    if kind == "array":
        text = "a list of " + expected(node.get("items")).removeprefix("a ").removeprefix("an ")
        if node.get("maxItems") is not None:
            text += f" (at most {node['maxItems']} items)"
        return text
    if kind == "object":
        return "a JSON object"
    return "a valid value"


@cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def describe(model: type[BaseModel], exc: ValidationError, what: str) -> str:
    """One line per problem, each naming its field: 'limit: expected an integer ...'."""
    schema = _schema(model)
    fields = sorted(schema.get("properties") or {})
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # A union reports each variant (for_.str, for_.int): the field is the first part.
        field_loc = tuple(p for p in loc if not (isinstance(p, str) and (
            p in ("str", "int", "float", "bool") or p.startswith(("constrained-", "function-"))
        )))
        name = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in field_loc)
        name = name.replace(".[", "[")[:80] or what
        if err["type"] == "extra_forbidden":
            known = ", ".join(fields) or "none"
            text = f"{name}: unknown {'parameter' if what == 'query' else 'field'}" \
                   f" (known: {known})"
        elif err["type"] == "missing":
            text = f"{name}: required, {expected(_schema_at(schema, field_loc))}"
        elif not field_loc:
            text = f"{what}: expected a JSON object"
        else:
            text = f"{name}: expected {expected(_schema_at(schema, field_loc))}"
        if text not in problems:
            problems.append(text)
    return "; ".join(problems)


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def parse_json(raw: bytes) -> Any:
    """Decode a request body: UTF-8 JSON (no NaN or Infinity), at most MAX_JSON_DEPTH deep.

    A number too large for a float (1e999) decodes as infinity, which no field accepts: the
    model then names the field."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("body: expected JSON in UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise bad_request(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError is one
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise bad_request(f"body: not valid JSON ({detail})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise bad_request(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


async def body_of(request: web.Request, model: type[M]) -> M:
    """The request's JSON body checked against `model`; no body at all counts as {}."""
    raw = await request.read() if request.can_read_body else b""  # 413 past client_max_size
    value = parse_json(raw) if raw.strip() else {}
    if not isinstance(value, dict):
        raise bad_request(f"body: expected a JSON object, not {_json_kind(value)}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise bad_request(describe(model, exc, "body")) from None


def query_of(request: web.Request, model: type[M]) -> M:
    """The request's query parameters checked against `model`."""
    values: dict[str, str] = {}
    for key in request.query:
        if key in values:
            continue
        given = request.query.getall(key)
        if len(given) > 1:
            raise bad_request(f"{key}: given {len(given)} times; give it once")
        if "\x00" in given[0] or "\x00" in key:
            raise bad_request(f"{key[:50]!r}: NUL in the query string")
        values[key] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise bad_request(describe(model, exc, "query")) from None


def checked(model: type[M], values: dict[str, Any], what: str) -> M:
    """Values from elsewhere (a dashboard form or query) checked against `model`: Invalid
    naming the field, one line."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise Invalid(describe(model, exc, what)) from None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
