"""dsc.core.zips: zip archives written by hand, read back by zipfile, NumPy and torch."""

from __future__ import annotations

import io
import zipfile
import zlib

import numpy as np
import pytest
import torch

from dsc.core import zips


def _entries():
    rng = np.random.default_rng(3)
    return [
        ("zeros.bin", bytes(200_000)),  # deflates
        ("noise.bin", rng.bytes(100_000)),  # does not: stored
        ("tiny", b"x"),
        ("empty", b""),
        ("dir/naïve-ñame.txt", "text ✓".encode() * 500),
    ]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_what_zipfile_reads_back_is_what_was_written(threads):
    buf = io.BytesIO()
    zips.write_zip(buf, _entries(), threads=threads)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        assert z.testzip() is None  # every CRC checks
        assert [i.filename for i in z.infolist()] == [n for n, _ in _entries()]
        assert all(z.read(n) == d for n, d in _entries())
        kinds = {i.filename: i.compress_type for i in z.infolist()}
        sizes = {i.filename: i.compress_size for i in z.infolist()}
    assert kinds["zeros.bin"] == zipfile.ZIP_DEFLATED and sizes["zeros.bin"] < 2000
    assert kinds["noise.bin"] == zipfile.ZIP_STORED and sizes["noise.bin"] == 100_000


def test_the_thread_count_changes_no_byte_but_the_clock():
    archives = []
    for threads in (1, 2):
        buf = io.BytesIO()
        zips.write_zip(buf, _entries(), threads=threads)
        with zipfile.ZipFile(buf) as z:
            archives.append([(i.filename, i.CRC, i.compress_size, i.header_offset) for i in z.infolist()])
    assert archives[0] == archives[1]


def test_npz_and_torch_archives_load_after_the_rewrite(tmp_path):
    from dsc.tracking import deflate

    arrays = {"a": np.arange(10_000, dtype=np.float16).reshape(100, 100), "b": np.array(["x", "yz"])}
    np.savez(tmp_path / "s.npz", **arrays)
    with np.load(deflate(tmp_path / "s.npz")) as back:
        assert all(np.array_equal(back[k], v) for k, v in arrays.items())
    state = {"w": torch.randn(64, 64), "z": torch.zeros(1000), "meta": [1, "two"]}
    torch.save(state, tmp_path / "c.pt")
    loaded = torch.load(deflate(tmp_path / "c.pt"), weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["z"], state["z"])
    assert loaded["meta"] == [1, "two"]


def test_an_archive_past_the_plain_format_is_left_to_zipfile(monkeypatch):
    monkeypatch.setattr(zips, "_LIMIT", 1000)  # as if the entries needed zip64
    buf = io.BytesIO()
    zips.write_zip(buf, _entries())
    with zipfile.ZipFile(buf) as z:
        assert z.testzip() is None and all(z.read(n) == d for n, d in _entries())
        assert z.getinfo("noise.bin").compress_type == zipfile.ZIP_STORED


def test_run_length_packing_reads_back_and_beats_level_one_on_sparse_halves():
    """``zlib.Z_RLE`` entries are plain deflate: zipfile and np.load read them."""
    rng = np.random.default_rng(7)
    acts = np.maximum(rng.normal(size=(200, 1024)), 0).astype(np.float16)  # half zeros, as after a ReLU
    data = acts.tobytes()
    rle, plain = zips.pack(data, lambda d: zlib.Z_RLE), zips.pack(data, lambda d: zlib.Z_DEFAULT_STRATEGY)
    assert rle.method == plain.method == zipfile.ZIP_DEFLATED
    assert len(rle.payload) < len(plain.payload) < len(data)
    buf = io.BytesIO()
    zips.write_packed(buf, [("a.npy", rle), ("b.bin", zips.pack(b"x" * 10))])
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        assert z.testzip() is None and z.read("a.npy") == data and z.read("b.bin") == b"x" * 10


def test_the_choice_stores_noise_and_takes_the_smaller_strategy():
    rng = np.random.default_rng(8)
    assert zips.choose(rng.bytes(100_000)) is None  # random bytes: nothing to gain
    assert zips.choose(b"ab" * 50_000) == zlib.Z_DEFAULT_STRATEGY  # repeats: LZ77's matches win
    # float32 normals: random mantissas, a peaked exponent byte; Huffman alone codes it as well
    weights = rng.normal(scale=0.02, size=100_000).astype(np.float32).tobytes()
    assert zips.choose(weights) == zlib.Z_HUFFMAN_ONLY
    assert zips.choose(weights, gain=0.5) is None  # it saves far less than half
    assert zips.choose(b"tiny") == zips.STRATEGIES[0]
    assert zips.pack(weights).method == zipfile.ZIP_DEFLATED
