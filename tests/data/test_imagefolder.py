"""graft.data.imagefolder and graft.data.images: tiny image folders written into tmp_path."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graft.data import imagefolder
from graft.data.dataset import DataError
from graft.data.images import IMAGE_EXTENSIONS, decode_image_file, is_image_file, to_uint8_tensor
from graft.data.imagefolder import load_imagefolder


def _save(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 9), color=(200, 30, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        img = Image.new("RGB", size, color).convert("P")
    elif mode == "L":
        img = Image.new("L", size, color if isinstance(color, int) else 128)
    elif mode == "RGBA":
        img = Image.new("RGBA", size, color if len(color) == 4 else (*color, 255))
    else:
        img = Image.new(mode, size, color)
    img.save(path)
    return path


def _folder(root: Path, layout: dict[str, list[str]]) -> Path:
    for cls, files in layout.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name in files:
            _save(root / cls / name)
    return root


# ------------------------------------------------------------------ images.py


def test_extensions_case_insensitive():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} <= set(IMAGE_EXTENSIONS)
    assert is_image_file(Path("a/B.PNG")) and is_image_file(Path("x.JpEg")) and not is_image_file(Path("x.txt"))


@pytest.mark.parametrize("channels", [1, 3])
def test_to_uint8_tensor_modes(channels):
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    cases = {
        "RGB": red,
        "L": Image.new("L", (7, 7), 76),
        "RGBA-opaque": Image.new("RGBA", (5, 9), (255, 0, 0, 255)),
        "P": red.convert("P"),
        "CMYK": red.convert("CMYK"),
        "1": Image.new("1", (4, 4), 1),
        "I;16": Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)),
        "LA": Image.new("LA", (3, 5), (200, 255)),
    }
    for name, img in cases.items():
        t = to_uint8_tensor(img, 8, channels)
        assert t.dtype == torch.uint8 and t.shape == (channels, 8, 8), name
    # colours are what they should be
    assert to_uint8_tensor(red, 8, 3)[:, 0, 0].tolist() == [255, 0, 0]
    assert to_uint8_tensor(red, 8, 1)[0, 0, 0].item() == 76  # ITU-R 601 luma of pure red
    assert to_uint8_tensor(cases["I;16"], 4, 1).unique().tolist() == [255]  # 16-bit scaled, not clipped garbage
    assert to_uint8_tensor(cases["L"], 4, 3)[:, 0, 0].tolist() == [76, 76, 76]


def test_to_uint8_tensor_alpha_composited_on_black():
    transparent = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    assert to_uint8_tensor(transparent, 4, 3).max().item() == 0
    half = Image.new("RGBA", (4, 4), (200, 100, 0, 128))
    assert abs(to_uint8_tensor(half, 4, 3)[0, 0, 0].item() - 100) <= 1
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 255, 255] * 256)
    pal.info["transparency"] = 0
    assert to_uint8_tensor(pal, 4, 1).max().item() == 0


def test_to_uint8_tensor_resizes_without_crop():
    img = Image.new("RGB", (40, 10), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 10))  # left half red, right half blue
    t = to_uint8_tensor(img, 16, 3)
    assert t.shape == (3, 16, 16)
    assert t[:, 8, 0].tolist() == [255, 0, 0] and t[:, 8, 15].tolist() == [0, 0, 255]


def test_decode_applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # red left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "o.png", exif=exif)
    t = decode_image_file(tmp_path / "o.png", 10, 3)
    assert t[:, 0, 5].tolist() == [255, 0, 0] and t[:, 9, 5].tolist() == [0, 0, 255]  # red now on top


def test_decode_bad_inputs(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "noise.png").write_bytes(os.urandom(300))
    (tmp_path / "text.jpg").write_text("hello, not an image\n")
    good = _save(tmp_path / "good.png", size=(64, 64))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    for name in ["zero.png", "noise.png", "text.jpg", "trunc.png", "missing.png"]:
        with pytest.raises(DataError, match="cannot be read as an image") as e:
            decode_image_file(tmp_path / name, 8, 3)
        assert str(tmp_path / name) in str(e.value)
    with pytest.raises(DataError, match="file is empty: 0 bytes"):
        decode_image_file(tmp_path / "zero.png", 8, 3)


@pytest.mark.parametrize("size,pixels", [((40, 40), 1600), ((60, 60), 3600)])  # warning range and PIL's error range
def test_decompression_bomb_guard(tmp_path, monkeypatch, size, pixels):
    path = _save(tmp_path / "big.png", size=size)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    filters_before = list(warnings.filters)
    with pytest.raises(DataError, match=f"{pixels} pixels") as e:
        decode_image_file(path, 8, 3)
    assert str(path) in str(e.value) and "MAX_IMAGE_PIXELS" in str(e.value)
    assert warnings.filters == filters_before  # global warning state restored
    with pytest.raises(DataError, match=f"{pixels} pixels"):  # and through the folder loader
        _save(tmp_path / "root" / "a" / "big.png", size=size)
        load_imagefolder(tmp_path / "root", 8, 3)
    assert warnings.filters == filters_before


# ------------------------------------------------------------------ imagefolder.py


def test_class_order_labels_and_file_order(tmp_path):
    root = _folder(tmp_path / "root", {"zebra": ["b.png", "a.png"], "ant": ["x.jpg"], "moth": ["m.bmp", "n.gif"]})
    _save(root / "zebra" / "c.PNG", color=(0, 0, 255))  # upper-case extension is read too
    (root / "zebra" / "notes.txt").write_text("ignored")
    (root / "ant" / ".hidden.png").write_bytes(b"garbage")  # hidden: ignored
    (root / ".cache").mkdir()  # hidden folder: not a class
    _save(root / ".cache" / "x.png")
    ds, bad = load_imagefolder(root, 16, 3)
    assert bad == []
    assert ds.classes == ["ant", "moth", "zebra"]
    assert ds.labels.tolist() == [0, 1, 1, 2, 2, 2]
    assert ds.images.shape == (6, 3, 16, 16) and ds.images.dtype == torch.uint8
    assert ds.images[-1, :, 0, 0].tolist() == [0, 0, 255]  # zebra/c.PNG sorts after a.png, b.png


def test_classes_selects_and_orders(tmp_path):
    root = _folder(tmp_path / "root", {"a": ["1.png"], "b": ["1.png", "2.png"], "c": ["1.png"]})
    (root / "c" / "broken.png").write_bytes(b"not read because c is not selected")
    ds, _ = load_imagefolder(root, 8, 1, classes=["b", "a"])
    assert ds.classes == ["b", "a"]
    assert ds.labels.tolist() == [0, 0, 1]
    with pytest.raises(DataError, match=r"\['nope'\].*present: \['a', 'b', 'c'\]"):
        load_imagefolder(root, 8, 1, classes=["a", "nope"])


def test_mixed_modes_and_sizes(tmp_path):
    root = tmp_path / "root"
    _save(root / "x" / "l.png", "L", (31, 17), 76)
    _save(root / "x" / "rgb.jpg", "RGB", (50, 20), (255, 0, 0))
    _save(root / "x" / "rgba.png", "RGBA", (9, 40), (255, 0, 0, 255))
    _save(root / "x" / "p.gif", "P", (13, 13), (255, 0, 0))
    _save(root / "x" / "w.webp", "RGB", (8, 8), (255, 0, 0))
    _save(root / "x" / "t.tiff", "RGB", (8, 30), (255, 0, 0))
    for channels in (1, 3):
        ds, _ = load_imagefolder(root, 24, channels)
        assert ds.images.shape == (6, channels, 24, 24)
        if channels == 1:  # red and L=76 are the same grey
            assert (ds.images.float() - 76).abs().max() <= 3


def test_unusual_file_names(tmp_path):
    name = "a b ünïcødé 'single' \"double\" €.png"
    root = tmp_path / "root dir ü"
    path = _save(root / "clâss 1" / name)
    ds, _ = load_imagefolder(root, 8, 3)
    assert ds.classes == ["clâss 1"] and len(ds) == 1
    path.write_bytes(b"broken")
    with pytest.raises(DataError) as e:
        load_imagefolder(root, 8, 3)
    assert name in str(e.value)


def _with_bad_files(tmp_path: Path) -> Path:
    root = _folder(tmp_path / "root", {"a": ["1.png", "2.png"], "b": ["1.png"]})
    (root / "a" / "noise.png").write_bytes(os.urandom(200))
    (root / "a" / "zero.png").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("I am text")
    return root


def test_bad_files_fail_lists_all(tmp_path):
    root = _with_bad_files(tmp_path)
    with pytest.raises(DataError) as e:
        load_imagefolder(root, 8, 3)
    msg = str(e.value)
    for rel in ["a/noise.png", "a/zero.png", "b/text.jpg"]:
        assert str(root / rel) in msg
    assert "3 of 6" in msg and "bad_files: skip" in msg


def test_bad_files_skip_returns_them(tmp_path):
    root = _with_bad_files(tmp_path)
    ds, bad = load_imagefolder(root, 8, 3, bad_files="skip")
    assert ds.labels.tolist() == [0, 0, 1]
    assert [b["path"] for b in bad] == [str(root / "a/noise.png"), str(root / "a/zero.png"), str(root / "b/text.jpg")]
    assert all(set(b) == {"path", "reason"} and b["reason"] for b in bad)
    assert "empty" in bad[1]["reason"]


def test_skip_that_empties_a_class_fails(tmp_path):
    root = _folder(tmp_path / "root", {"a": ["1.png"]})
    (root / "b").mkdir()
    (root / "b" / "bad.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"\['b'\]"):
        load_imagefolder(root, 8, 3, bad_files="skip")


def test_bad_files_mode_checked(tmp_path):
    with pytest.raises(ValueError, match="bad_files"):
        load_imagefolder(tmp_path, 8, 3, bad_files="ignore")


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        load_imagefolder(tmp_path / "missing", 8, 3)
    assert str(tmp_path / "missing") in str(e.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_imagefolder(tmp_path / "file", 8, 3)
    flat = tmp_path / "flat"
    _save(flat / "img.png")
    with pytest.raises(DataError, match="no class folders.*move them into class subfolders"):
        load_imagefolder(flat, 8, 3)
    root = _folder(tmp_path / "root", {"full": ["1.png"]})
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="'empty' holds no image files") as e:
        load_imagefolder(root, 8, 3)
    assert str(root / "empty") in str(e.value)


def test_progress_and_threaded_decoding_match(tmp_path, monkeypatch):
    root = tmp_path / "root"
    rng = np.random.default_rng(0)
    for i in range(40):
        folder = root / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (root / "c1" / "bad.png").write_bytes(b"bad")
    calls = []
    monkeypatch.setattr(imagefolder, "_MAX_WORKERS", 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    threaded, bad_t = load_imagefolder(root, 5, 3, bad_files="skip", progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 41) and calls[-1] == (41, 41) and len(calls) == 42
    monkeypatch.setattr(imagefolder, "_THREADED_FROM", 10**9)
    single, bad_s = load_imagefolder(root, 5, 3, bad_files="skip")
    assert torch.equal(threaded.images, single.images) and torch.equal(threaded.labels, single.labels)
    assert bad_t == bad_s and len(bad_t) == 1 and len(threaded) == 40


def test_decoding_runs_at_most_a_window_ahead_of_collection_and_keeps_order():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from graft.data.imagefolder import bounded_map

    started, lock = [], threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        return i * i

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = bounded_map(pool, work, range(100), window=8)
        for collected, value in enumerate(results):
            assert value == collected * collected  # in order
            with lock:
                assert len(started) <= collected + 1 + 8  # never more than the window ahead
    assert sorted(started) == list(range(100))
