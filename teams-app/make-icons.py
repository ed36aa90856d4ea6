#!/usr/bin/env python3
"""Draws the Teams app icons (a bell) with the standard library only.

color.png: 192x192, white bell on the accent colour (full bleed, Teams rounds the corners).
outline.png: 32x32, white bell on a transparent background, as Teams requires.

Run from anywhere: python3 teams-app/make-icons.py
"""

import os
import struct
import zlib

ACCENT = (0x0F, 0x6C, 0xBD)  # keep in step with "accentColor" in manifest.json
HERE = os.path.dirname(os.path.abspath(__file__))


def inside_bell(x, y):
    """Whether (x, y), both in [-1, 1] with y down, is inside the bell."""
    # Knob on top.
    if x * x + (y + 0.70) ** 2 <= 0.11 ** 2:
        return True
    # Dome: upper half of a circle.
    cy, r = -0.18, 0.44
    if y <= cy and x * x + (y - cy) ** 2 <= r * r:
        return True
    # Flaring sides down to the rim.
    top, bottom = cy, 0.36
    if top <= y <= bottom:
        t = (y - top) / (bottom - top)
        half = r + (0.64 - r) * t * t
        if abs(x) <= half:
            return True
    # Rim: a bar with rounded ends.
    if 0.36 <= y <= 0.48:
        if abs(x) <= 0.66:
            return True
        ry = 0.42
        if (abs(x) - 0.66) ** 2 + (y - ry) ** 2 <= 0.06 ** 2:
            return True
    # Clapper.
    if x * x + (y - 0.60) ** 2 <= 0.13 ** 2:
        return True
    return False


def coverage(px, py, size, scale, samples=4):
    """Share of pixel (px, py) covered by the bell drawn at `scale` of the icon."""
    hits = 0
    for sy in range(samples):
        for sx in range(samples):
            u = (px + (sx + 0.5) / samples) / size * 2 - 1
            v = (py + (sy + 0.5) / samples) / size * 2 - 1
            if inside_bell(u / scale, v / scale):
                hits += 1
    return hits / (samples * samples)


def png(width, height, rgba_rows):
    """A PNG file (8-bit RGBA, no interlace) from rows of (r, g, b, a) tuples."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in rgba_rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def color_icon(size=192):
    rows = []
    for py in range(size):
        row = []
        for px in range(size):
            a = coverage(px, py, size, 0.62)
            rgb = tuple(round(c + (255 - c) * a) for c in ACCENT)
            row.append(rgb + (255,))
        rows.append(row)
    return png(size, size, rows)


def outline_icon(size=32):
    rows = []
    for py in range(size):
        row = []
        for px in range(size):
            a = coverage(px, py, size, 0.95, samples=8)
            row.append((255, 255, 255, round(255 * a)))
        rows.append(row)
    return png(size, size, rows)


if __name__ == "__main__":
    with open(os.path.join(HERE, "color.png"), "wb") as f:
        f.write(color_icon())
    with open(os.path.join(HERE, "outline.png"), "wb") as f:
        f.write(outline_icon())
    print("wrote color.png (192x192) and outline.png (32x32)")
