"""A tiny ImageNet-style source folder holding every kind of file a real crawl contains, good and bad.

Each decodable file is a (mostly) flat colour that no other file shares, so a converted sample can be
traced back to its source by its mean colour, and its label checked against the folder it came from.
``write_corpus`` returns the manifest: what each file must become (colour, size) or why it is skipped.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["bird", "café ü", "zebra x"]  # sorted; a space and non-ASCII on purpose
MAX_RES = 64  # the converter's --max-resolution in these tests
MAX_PIXELS = 3_000_000  # the converter's max_pixels in these tests: the 9000x300 image fits, bomb.png not


@dataclass(frozen=True)
class Entry:
    rel: str  # relative to SRC
    label: int  # -1 for files outside a class folder
    rgb: tuple[int, int, int] | None = None  # expected mean colour after conversion; None = skipped
    size: tuple[int, int] | None = None  # expected (width, height) after conversion, when it matters
    reason: str | None = None  # expected substring of the skip reason

    @property
    def split(self) -> str:
        return self.rel.split("/")[0]


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, **kw)
    return out.getvalue()


def _png(img: Image.Image, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG", **kw)
    return out.getvalue()


def png16_rgb(rgb16: tuple[int, int, int], size: int = 16) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), all pixels ``rgb16``."""
    row = b"\x00" + struct.pack(">3H", *rgb16) * size
    chunks = [(b"IHDR", struct.pack(">2I5B", size, size, 16, 2, 0, 0, 0)), (b"IDAT", zlib.compress(row * size))]
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def exif_rotated() -> bytes:
    """Stored 48x24 left red / right blue with EXIF orientation 6: upright it is 24x48, red on top."""
    img = Image.new("RGB", (48, 24), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 24, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(img, exif=exif.tobytes())


def _noise_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return _jpeg(Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)))


def _corrupt_jpeg() -> bytes:
    """A JPEG whose header reads fine but whose Huffman table is nonsense: it fails only when decoded."""
    data = bytearray(_noise_jpeg(3))
    dht = data.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16
    return bytes(data)


def _palette_with_transparency() -> bytes:
    # left half: index 0, black and fully transparent; right half: index 1, opaque blue
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (16, 0, 32, 32))
    return _png(img, transparency=0)


PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
PALETTE += [(70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0)]
PALETTE += [(128, 128, 0), (0, 0, 128), (255, 250, 200), (170, 255, 195)]


def _files() -> list[tuple[Entry, bytes]]:
    solid = iter(PALETTE)

    def flat(rel: str, label: int, **kw: object) -> tuple[Entry, bytes]:
        rgb = next(solid)
        return Entry(rel, label, rgb, (24, 20)), _jpeg(Image.new("RGB", (24, 20), rgb), **kw)

    c0, c1, c2 = (f"train/{c}" for c in CLASSES)
    v0, v1, v2 = (f"val/{c}" for c in CLASSES)
    gray16 = Image.fromarray(np.full((16, 16), 40000, np.uint16))
    la = Image.new("LA", (16, 16), (0, 128))
    return [
        flat(f"{c0}/n01_0001.JPEG", 0),
        flat(f"{c0}/photo one.jpg", 0),
        flat(f"{c0}/sub/deep.jpg", 0),
        (Entry(f"{c0}/gray.jpg", 0, (60, 60, 60)), _jpeg(Image.new("L", (16, 16), 60))),
        (Entry(f"{c0}/cmyk.jpg", 0, (255, 0, 0)), _jpeg(Image.new("CMYK", (16, 16), (0, 255, 255, 0)))),
        (Entry(f"{c0}/exif.jpg", 0, (127, 0, 127), (24, 48)), exif_rotated()),
        flat(f"{c1}/café-ü.jpg", 1),
        flat(f"{c1}/b.jpg", 1),
        (Entry(f"{c1}/gray16.png", 1, (156, 156, 156)), _png(gray16)),  # 40000/257; clipping would give 255
        (Entry(f"{c1}/rgb16.png", 1, (195, 39, 117)), png16_rgb((50000, 10000, 30000))),
        (Entry(f"{c1}/palette.png", 1, (127, 127, 255)), _palette_with_transparency()),
        (Entry(f"{c1}/la.png", 1, (127, 127, 127)), _png(la)),  # black at alpha 128 on white
        flat(f"{c2}/c.jpg", 2),
        (Entry(f"{c2}/png-named.jpg", 2, (10, 20, 30)), _png(Image.new("RGB", (20, 20), (10, 20, 30)))),
        (Entry(f"{c2}/wide.jpg", 2, (90, 40, 200), (MAX_RES, 2)), _jpeg(Image.new("RGB", (9000, 300), (90, 40, 200)))),
        (Entry(f"{c2}/notes.txt", 2, reason="not an image"), b"class notes, not a picture\n"),
        (Entry(f"{c2}/empty.jpg", 2, reason="empty file"), b""),
        (Entry(f"{c2}/truncated.jpg", 2, reason="truncated"), _noise_jpeg(1)[:700]),
        (Entry(f"{c2}/corrupt.jpg", 2, reason="broken data stream"), _corrupt_jpeg()),
        (Entry(f"{c2}/garbage.jpg", 2, reason="not an image"), b"\xff\xd8\xff\xdb" + bytes(range(256)) * 4),
        (Entry(f"{c2}/bomb.png", 2, reason="too large"), _png(Image.new("L", (2000, 2000), 0))),
        (Entry("train/README.md", -1, reason="not inside a class folder"), b"# a stray file\n"),
        flat(f"{v0}/v0.jpg", 0),
        flat(f"{v1}/v1.jpg", 1),
        flat(f"{v2}/v2.jpg", 2),
        flat(f"{v2}/v2b.jpg", 2),
        (Entry(f"{v1}/broken.jpg", 1, reason="truncated"), _noise_jpeg(2)[:500]),
    ]


def write_corpus(root: Path) -> list[Entry]:
    """Write the corpus under ``root`` (created) and return its manifest."""
    entries = []
    for entry, data in _files():
        path = root / entry.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(entry)
    return entries


def write_classes(root: Path, train: dict[str, int], val: dict[str, int]) -> None:
    """A clean source: ``train[name]`` / ``val[name]`` small JPEGs per class folder (0 = an empty folder)."""
    for split, counts in (("train", train), ("val", val)):
        for c, (name, n) in enumerate(counts.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"img_{i}.jpg").write_bytes(_jpeg(Image.new("RGB", (16, 16), (40 * c % 256, 20 * i, 128))))


@dataclass(frozen=True)
class Sample:
    """One converted record, read back: where it sits, its label, its mean colour and size."""

    name: str
    label: int
    rgb: tuple[float, ...]
    size: tuple[int, int]


def unmatched(entries: list[Entry], samples: list[Sample], split: str, tol: float = 8) -> list[str]:
    """Problems found holding ``samples`` against the manifest: each decodable file of ``split`` must be
    there exactly once, with its folder's label and its expected size; nothing else may be."""
    good = [e for e in entries if e.rgb is not None and e.split == split]
    seen: dict[str, int] = {e.rel: 0 for e in good}
    problems = []
    for s in samples:
        hits = [e for e in good if max(abs(a - b) for a, b in zip(e.rgb or (), s.rgb)) <= tol]
        if len(hits) != 1:
            problems.append(f"{s.name}: colour {s.rgb} matches {[e.rel for e in hits]}")
            continue
        e = hits[0]
        seen[e.rel] += 1
        if s.label != e.label:
            problems.append(f"{s.name} ({e.rel}): label {s.label}, expected {e.label}")
        if e.size is not None and s.size != e.size:
            problems.append(f"{s.name} ({e.rel}): size {s.size}, expected {e.size}")
    problems += [f"{rel}: present {n} times" for rel, n in seen.items() if n != 1]
    return problems
