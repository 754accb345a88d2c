"""The bits of WebDAV XML kbackup reads: PROPFIND multistatus replies and error bodies."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DAV = "{DAV:}"
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:resourcetype/><d:getcontentlength/><d:getlastmodified/>"
    b"</d:prop></d:propfind>"
)


@dataclass(frozen=True)
class Entry:
    key: str
    collection: bool
    size: int
    modified: datetime


def server_message(body: bytes) -> str:
    """The human part of an XML error body (Sabre/Nextcloud put it in s:message)."""
    if not body.lstrip().startswith(b"<") or len(body) > 65536:
        return ""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return ""
    for element in root.iter():
        if element.tag.endswith("}message") and element.text:
            return element.text.strip()[:200]
    return ""


def parse_multistatus(body: bytes, key_of: Callable[[str], str | None]) -> list[Entry]:
    """Entries of a PROPFIND reply; key_of maps an href to a key (None: not ours, skipped).

    Raises ET.ParseError on a reply that is not XML.
    """
    entries = []
    for response in ET.fromstring(body).iter(DAV + "response"):
        key = key_of(response.findtext(DAV + "href") or "")
        if key is None:
            continue
        collection, size, modified = False, 0, None
        for propstat in response.iter(DAV + "propstat"):
            if " 200 " not in (propstat.findtext(DAV + "status") or "") + " ":
                continue  # properties the server does not have come back as 404
            prop = propstat.find(DAV + "prop")
            if prop is None:
                continue
            kind = prop.find(DAV + "resourcetype")
            collection = collection or (
                kind is not None and kind.find(DAV + "collection") is not None
            )
            with contextlib.suppress(TypeError, ValueError):
                size = int(prop.findtext(DAV + "getcontentlength") or size)
            with contextlib.suppress(TypeError, ValueError):
                modified = parsedate_to_datetime(prop.findtext(DAV + "getlastmodified") or "")
        # Unknown age counts as new: leftover cleanup must never take it for an old orphan.
        when = modified.astimezone(UTC) if modified else datetime.now(UTC)
        entries.append(Entry(key, collection, size, when))
    return entries
