"""A small bar chart as a PNG, written with zlib and struct: mail clients strip SVG and often
block data: URIs, so a digest mail carries its charts as images by Content-ID."""

from __future__ import annotations

import struct
import zlib

BAR, GAP, HEIGHT = 6, 2, 24
BACKGROUND = (255, 255, 255)
BAR_COLOUR = (67, 159, 224)
EMPTY = (220, 220, 220)  # a point without a backup: a thin grey base line


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGB PNG from `height` rows of `width` * 3 bytes."""
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


def bar_chart(values: list[int | None]) -> bytes:
    """One bar per value, scaled to the largest; None is an empty point."""
    points = values or [None]
    top = max((v for v in points if v is not None), default=0)
    heights = [0 if v is None else (max(1, round(v * HEIGHT / top)) if top and v else 1)
               for v in points]
    width = len(points) * (BAR + GAP)
    rows = []
    for y in range(HEIGHT):
        row = bytearray()
        for value, bar in zip(points, heights, strict=True):
            filled = HEIGHT - y <= bar
            colour = BAR_COLOUR if filled and value is not None else \
                EMPTY if value is None and y == HEIGHT - 1 else BACKGROUND
            row += bytes(colour) * BAR + bytes(BACKGROUND) * GAP
        rows.append(bytes(row))
    return png(width, HEIGHT, rows)
