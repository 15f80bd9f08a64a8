import io
import tarfile

import numpy as np
import pytest

from dsc.data import yale
from dsc.errors import DataError

LIGHTS = [(0, 0), (35, 40), (-110, -20), (5, -10)]


def write_pgm(path, size=(24, 20), value=100):
    """A real binary PGM (P5) image file."""
    w, h = size
    path.write_bytes(b"P5\n%d %d\n255\n" % (w, h) + bytes([value % 256]) * (w * h))


def make_tree(root, subjects=(1, 2, 3), poses=(0, 6)):
    root.mkdir(parents=True, exist_ok=True)
    for s in subjects:
        for p in poses:
            d = root / f"yaleB{s:02d}_P{p:02d}"
            d.mkdir()
            for az, el in LIGHTS:
                write_pgm(d / f"yaleB{s:02d}_P{p:02d}A{az:+04d}E{el:+03d}.pgm", value=10 * s + p)
            # not samples: ambient shot, corrupt capture, info list, FTP junk
            write_pgm(d / f"yaleB{s:02d}_P{p:02d}_Ambient.pgm")
            (d / f"yaleB{s:02d}_P{p:02d}A+000E+00.pgm.bad").write_bytes(b"garbage")
            (d / f"yaleB{s:02d}_P{p:02d}.info").write_text("list\n")
    (root / "WS_FTP.LOG").write_text("log")
    (root / "DEADJOE").write_text("joe")
    return root


def test_parse_name_signs_and_ints():
    rec = yale.parse_name("yaleB03_P06A+035E+40.pgm")
    assert (rec.subject, rec.pose, rec.azimuth, rec.elevation) == (3, 6, 35, 40)
    rec = yale.parse_name("yaleB11_P00A-110E-20.pgm")
    assert (rec.subject, rec.pose, rec.azimuth, rec.elevation) == (11, 0, -110, -20)
    for junk in ["yaleB03_P06_Ambient.pgm", "yaleB03_P06A+035E+40.pgm.bad", "yaleB03_P06.info", "DEADJOE"]:
        assert yale.parse_name(junk) is None


def test_scan_directory_keeps_only_samples(tmp_path):
    records = yale.scan(make_tree(tmp_path / "yale"))
    assert len(records) == 3 * 2 * len(LIGHTS)
    assert {r.subject for r in records} == {1, 2, 3}
    assert {(r.azimuth, r.elevation) for r in records} == set(LIGHTS)
    assert all(isinstance(r.subject, int) and isinstance(r.azimuth, int) for r in records)
    assert all(r.path.exists() and r.path.suffix == ".pgm" for r in records)


def _archive_folder(tmp_path):
    src = make_tree(tmp_path / "src", subjects=(4, 5))
    arch = tmp_path / "archives"
    arch.mkdir()
    for d in sorted(src.iterdir()):
        if d.is_dir():
            with tarfile.open(arch / f"{d.name}.tar.gz", "w:gz") as tar:
                for f in sorted(d.iterdir()):
                    tar.add(f, arcname=f"images/{f.name}")
    return arch


def test_scan_folder_of_archives(tmp_path):
    arch = _archive_folder(tmp_path)
    records = yale.scan(arch, extract_dir=tmp_path / "x")
    assert len(records) == 2 * 2 * len(LIGHTS)
    assert {r.subject for r in records} == {4, 5}
    assert all(str(r.path).startswith(str(tmp_path / "x")) for r in records)
    # a second scan reuses the extraction
    assert [r.path for r in yale.scan(arch, extract_dir=tmp_path / "x")] == [r.path for r in records]


def test_archives_go_under_the_home_cache_when_the_variable_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DSC_CACHE_DIR", "")
    monkeypatch.chdir(tmp_path)
    records = yale.scan(_archive_folder(tmp_path))
    assert records and all((tmp_path / "home" / ".cache" / "dsc" / "yale") in r.path.parents for r in records)
    assert not (tmp_path / "yale").exists()


def _tar_with(tmp_path, name, member: tarfile.TarInfo, data=b""):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink"])
def test_unsafe_archive_members_are_refused(tmp_path, kind):
    info = tarfile.TarInfo({"absolute": "/etc/evil.pgm", "dotdot": "../evil.pgm"}.get(kind, "images/link.pgm"))
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "images/other.pgm"
    else:
        info.size = 3
    path = _tar_with(tmp_path, "yaleB01_P00.tar.gz", info, b"abc" if info.size else b"")
    with pytest.raises(DataError, match="refusing to extract"):
        yale.scan(path, extract_dir=tmp_path / "x")
    assert not (tmp_path / "evil.pgm").exists()


def test_load_resizes_and_labels(tmp_path):
    root = make_tree(tmp_path / "yale")
    ims = yale.load(root, size=16, subjects="1,3")
    assert ims.images.shape == (2 * 2 * len(LIGHTS), 1, 16, 16)
    assert ims.classes == ("yaleB01", "yaleB03")
    assert set(ims.meta["subject"][ims.labels == 1]) == {3}
    # pixel values survive the resize of a constant image
    assert set(np.unique(ims.images[ims.meta["subject"] == 3])) <= {30, 36}


def test_random_subjects_by_seed(tmp_path):
    a = yale.choose_subjects(list(range(1, 11)), "5", seed=0)
    assert a == yale.choose_subjects(list(range(1, 11)), "5", seed=0)
    assert len(a) == 5 and len(set(a)) == 5
    assert any(yale.choose_subjects(list(range(1, 11)), "5", seed=s) != a for s in range(1, 5))


@pytest.mark.parametrize(
    "subjects, match",
    [("9", "need between 2 and 3"), ("1,9", r"\[9\] not found"), ("1", "need between 2"), ("a,b", "comma list")],
)
def test_bad_subjects(tmp_path, subjects, match):
    with pytest.raises(DataError, match=match):
        yale.load(make_tree(tmp_path / "yale"), size=16, subjects=subjects)


def test_corrupt_image_names_the_file(tmp_path):
    root = make_tree(tmp_path / "yale", subjects=(1, 2))
    bad = next(root.rglob("yaleB02_P06A+035E+40.pgm"))
    bad.write_bytes(b"P5\n24 20\n255\n" + b"\x00" * 7)  # truncated pixel data
    with pytest.raises(DataError, match=r"cannot read image .*yaleB02_P06A\+035E\+40\.pgm"):
        yale.load(root, size=16, subjects="")


def test_missing_path_and_empty_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        yale.scan(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Yale B images"):
        yale.load(tmp_path / "empty")
