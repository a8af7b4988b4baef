"""A minimal PNG reader and writer for the browser test: decode a screenshot to RGB rows, crop, encode.

Handles what Chromium writes (8-bit RGB or RGBA, non-interlaced, the five scanline filters). Not a general
PNG library; no dependency beyond zlib and numpy.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Image:
    width: int
    height: int
    rows: list[bytes]  # RGB, 3 bytes per pixel

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        row = self.rows[y]
        return row[3 * x], row[3 * x + 1], row[3 * x + 2]

    def crop(self, top: int, bottom: int) -> Image:
        return Image(self.width, bottom - top, self.rows[top:bottom])


def read_png(data: bytes) -> Image:
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a PNG file")
    pos, idat, header = len(_SIGNATURE), bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {color}, interlace {interlace})")
    bpp = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(bytes(idat)), dtype=np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((height, width, bpp), dtype=np.uint8)
    previous = np.zeros((width, bpp), dtype=np.int32)
    for y in range(height):
        kind = int(raw[y, 0])
        line = raw[y, 1:].reshape(width, bpp).astype(np.int32)
        if kind == 1:  # Sub: a running sum along the row
            line = np.cumsum(line, axis=0) & 0xFF
        elif kind == 2:  # Up
            line = (line + previous) & 0xFF
        elif kind in (3, 4):  # Average, Paeth: each pixel needs its reconstructed left neighbour
            left = np.zeros(bpp, dtype=np.int32)
            upper_left = np.zeros(bpp, dtype=np.int32)
            for x in range(width):
                up = previous[x]
                if kind == 3:
                    line[x] = (line[x] + (left + up) // 2) & 0xFF
                else:
                    p = left + up - upper_left
                    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upper_left)
                    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upper_left))
                    line[x] = (line[x] + pred) & 0xFF
                left, upper_left = line[x], up
        elif kind != 0:
            raise ValueError(f"unknown PNG filter {kind} on row {y}")
        previous = line
        out[y] = line
    rgb = np.ascontiguousarray(out[:, :, :3])
    return Image(width, height, [row.tobytes() for row in rgb])


def write_png(image: Image) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + row for row in image.rows)
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)
    return _SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
