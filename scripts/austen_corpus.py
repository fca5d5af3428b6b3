"""Jane Austen's six novels from Debian's `r-cran-janeaustenr`, as plain text, without R.

The package keeps the novels in R's lazy-load database (`data/Rdata.rdx` + `Rdata.rdb`):
the index is a gzip'd R-serialized list mapping each object's name to (offset, length) in
the `.rdb`, and each slice is a 4-byte big-endian length, a compression byte (`Z` zlib,
`2` bzip2, `X` xz, `0` none) and an XDR serialization stream (`X\\n`, version 2 or 3).
Each novel is an R character vector with one element per printed line; empty strings
separate paragraphs and `_underscores_` mark italics.

    python scripts/austen_corpus.py OUT_DIR          # apt-get download + dpkg -x + extract

writes one UTF-8 file per novel (`OUT_DIR/<name>.txt`, paragraphs separated by a blank line).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

PACKAGE = "r-cran-janeaustenr"
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
# The six novels in publication order (the package also holds a data frame of them all).
NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")

# R's SEXP types and special markers that the package's objects use.
NILSXP, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 0, 1, 2, 9, 10, 13, 14, 16, 19
REFSXP, NILVALUE_SXP = 255, 254
NA_LENGTH = -1


class _XdrReader:
    """Reads one R serialization stream in XDR (big-endian) format."""

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialization stream")
        self.data, self.pos, self.refs = data, 2, []
        version = self.int()
        self.int(), self.int()  # the R version that wrote it, the oldest that reads it
        if version == 3:
            encoding_length = self.int()  # then the native encoding's name
            self.pos += encoding_length

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind == NILVALUE_SXP:
            return None
        if kind == REFSXP:
            return self.refs[(flags >> 8) - 1]
        if kind == SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == CHARSXP:
            length = self.int()
            if length == NA_LENGTH:
                return None
            text = self.data[self.pos : self.pos + length].decode("utf-8", errors="replace")
            self.pos += length
            return text
        if kind == LISTSXP:  # pairlist: attributes, tag, value, then the rest
            items = {}
            while kind == LISTSXP:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else str(len(items))
                items[tag] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
            return items  # ended by NILVALUE_SXP
        if kind in (STRSXP, VECSXP, INTSXP, LGLSXP, REALSXP):
            length = self.int()
            if kind in (INTSXP, LGLSXP):
                value = list(struct.unpack_from(f">{length}i", self.data, self.pos))
                self.pos += 4 * length
            elif kind == REALSXP:
                value = list(struct.unpack_from(f">{length}d", self.data, self.pos))
                self.pos += 8 * length
            else:
                value = [self.item() for _ in range(length)]
            attributes = self.item() if has_attr else {}
            names = attributes.get("names") if isinstance(attributes, dict) else None
            return dict(zip(names, value)) if names else value
        raise ValueError(f"R type {kind} is not handled")


def _decompress(blob: bytes) -> bytes:
    length, body = struct.unpack(">I", blob[:4])[0], blob[4:]
    marker, rest = body[:1], body[1:]
    if marker == b"Z":
        return zlib.decompress(rest)
    if marker == b"2":
        return bz2.decompress(rest)
    if marker == b"X":
        return lzma.decompress(rest)
    if marker == b"0":
        return rest[:length]
    return zlib.decompress(body)  # type-1 (plain zlib) database


def read_lazy_load(data_dir: Path) -> dict[str, list]:
    """Every object in an R lazy-load database: {name: value}."""
    index = _XdrReader(gzip.decompress((data_dir / "Rdata.rdx").read_bytes())).item()
    database = (data_dir / "Rdata.rdb").read_bytes()
    objects = {}
    for name, (offset, length) in index["variables"].items():
        offset, length = int(offset), int(length)
        objects[name] = _XdrReader(_decompress(database[offset : offset + length])).item()
    return objects


def paragraphs(lines: list[str | None]) -> str:
    """One novel's printed lines joined into paragraphs (blank line between them), italics
    marks removed."""
    text, current = [], []
    for line in lines:
        line = (line or "").strip()
        if line:
            current.append(line)
        elif current:
            text.append(" ".join(current))
            current = []
    if current:
        text.append(" ".join(current))
    return re.sub(r"_([^_]+)_", r"\1", "\n\n".join(text))


def novels_from_package(work_dir: Path) -> dict[str, str]:
    """Download the Debian package into work_dir, unpack it, and return {novel: text}."""
    work_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(work_dir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=work_dir, check=True)
        debs = sorted(work_dir.glob(f"{PACKAGE}_*.deb"))
    unpacked = work_dir / "unpacked"
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(unpacked)], check=True)
    objects = read_lazy_load(unpacked / DATA_DIR)
    return {name: paragraphs(objects[name]) for name in NOVELS}


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "austen")
    with tempfile.TemporaryDirectory() as tmp:
        novels = novels_from_package(Path(tmp))
    out.mkdir(parents=True, exist_ok=True)
    for name, text in novels.items():
        (out / f"{name}.txt").write_text(text, encoding="utf-8")
        print(f"{name}: {len(text):,} characters")


if __name__ == "__main__":
    main()
