"""Zip archives (``.npz``, torch checkpoints) rewritten with their entries deflated on several threads.

:mod:`zipfile` compresses one entry after another on the calling thread. zlib releases the
GIL while it compresses, so the entries of a snapshot (one per layer) can be deflated side by
side; the archive is then written here, in the plain zip format (no zip64: entries and
archive under 4 GiB, else :mod:`zipfile` writes it), which :mod:`zipfile`, ``np.load`` and
``torch.load`` read as any other.
"""

from __future__ import annotations

import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

LEVEL = 1  # most of the size gain for a fraction of the time
_LIMIT = 0xFFFFFFFF  # beyond this a size or an offset needs zip64
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header, without the name
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory record, without the name
_END = struct.Struct("<IHHHHIIH")  # end of central directory


SAMPLE = 1 << 16  # bytes of an entry tried before deciding how to pack it
# What checkpoints' and other archives' entries may be packed with: level 1 (LZ77 + Huffman) and
# Huffman alone. Trained float32 weights shrink about as much under either, but Huffman alone is
# much quicker; Adam's moments shrink more with LZ77.
STRATEGIES = (zlib.Z_DEFAULT_STRATEGY, zlib.Z_HUFFMAN_ONLY)
GAIN = 0.02  # the least share of an entry that deflating must save


def choose(data: bytes, strategies: Sequence[int] = STRATEGIES, gain: float = GAIN) -> int | None:
    """The zlib strategy to deflate ``data`` with, or None to store it.

    Each of ``strategies`` deflates the first 64 KiB; the one that shrinks it most is kept if it
    saves at least ``gain`` of it. Entries under 4 KiB are deflated with the first strategy.
    Random bytes (and anything already compressed) are stored.
    """
    sample = data[:SAMPLE]
    if len(sample) < 4096:
        return strategies[0]
    sizes = {strategy: len(_deflate(sample, strategy)) for strategy in strategies}
    best = min(sizes, key=sizes.__getitem__)
    return best if sizes[best] <= (1 - gain) * len(sample) else None


def _deflate(data: bytes, strategy: int) -> bytes:
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, 8, strategy)  # raw deflate, zlib's default memLevel
    return packer.compress(data) + packer.flush()


@dataclass(frozen=True)
class Packed:
    """One entry's contents, ready to write: raw deflate where it pays, else stored."""

    method: int  # zipfile.ZIP_DEFLATED or ZIP_STORED
    crc: int
    payload: bytes  # what the archive holds
    data: bytes  # the contents (kept for archives that zipfile must write)


Chooser = Callable[[bytes], "int | None"]


def pack(data: bytes, how: Chooser = choose) -> Packed:
    """``data`` deflated (level 1) with the zlib strategy ``how(data)`` gives, stored where it gives None.

    zlib releases the GIL while it compresses, so entries can be packed on other threads.
    """
    crc = zlib.crc32(data)
    strategy = how(data)
    if strategy is not None:
        return Packed(zipfile.ZIP_DEFLATED, crc, _deflate(data, strategy), data)
    return Packed(zipfile.ZIP_STORED, crc, data, data)


def _dos_time(stamp: float) -> tuple[int, int]:
    t = time.localtime(stamp)
    return ((t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday, t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2)


def write_zip(f: BinaryIO, entries: Sequence[tuple[str, bytes]], threads: int = 2, how: Chooser = choose) -> None:
    """Write the zip archive of ``entries`` ((name, contents), in order) to the binary file ``f``.

    Each entry is packed as `pack` does with ``how``, on ``threads`` threads, then written in
    order (`write_packed`).
    """
    with ThreadPoolExecutor(max(1, threads)) as pool:
        packed = list(pool.map(lambda e: pack(e[1], how), entries))
    write_packed(f, [(name, p) for (name, _), p in zip(entries, packed)])


def write_packed(f: BinaryIO, entries: Sequence[tuple[str, Packed]]) -> None:
    """Write the zip archive of packed ``entries`` ((name, `Packed`), in order) to ``f``.

    Archives that would need zip64 (entries or archive of 4 GiB or more) are written by
    :mod:`zipfile` instead, each entry deflated or stored as it was packed.
    """
    if sum(len(p.data) for _, p in entries) + 1024 * (len(entries) + 1) > _LIMIT:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=LEVEL) as z:
            for name, p in entries:
                z.writestr(name, p.data, p.method)
        return
    date, clock = _dos_time(time.time())
    central, offset = [], 0
    for name, p in entries:
        raw = name.encode("utf-8")
        flags = 0x800 if not raw.isascii() else 0  # bit 11: the name is UTF-8
        f.write(
            _LOCAL.pack(0x04034B50, 20, flags, p.method, clock, date, p.crc, len(p.payload), len(p.data), len(raw), 0)
            + raw
        )
        f.write(p.payload)
        central.append(
            _CENTRAL.pack(
                0x02014B50,
                20,
                20,
                flags,
                p.method,
                clock,
                date,
                p.crc,
                len(p.payload),
                len(p.data),
                len(raw),
                0,
                0,
                0,
                0,
                0o600 << 16,
                offset,
            )
            + raw
        )
        offset += _LOCAL.size + len(raw) + len(p.payload)
    directory = b"".join(central)
    f.write(directory)
    f.write(_END.pack(0x06054B50, 0, 0, len(entries), len(entries), len(directory), offset, 0))
