"""Probes on the data layer: cache confinement, default checksum on first open, the memory
guard of folder decoding, elongated images, non-UTF-8 names, 16-bit PNGs and outside links."""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from golddiff import data
from golddiff.data import CacheRebuiltWarning, cache, cached_arrays, load_dataset
from golddiff.data.memory import USER_LIMIT, set_max_memory


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GOLDDIFF_VERIFY_CACHE", raising=False)
    monkeypatch.delenv("GOLDDIFF_FOLLOW_LINKS", raising=False)
    data.DATASETS.clear()
    getattr(cache, "VERIFIED", set()).clear()
    yield
    USER_LIMIT.bytes = None
    data.DATASETS.clear()


def manifest(key: str):
    return data.cache_dir() / "arrays" / f"{cache._slug(key)}.json"


def point_manifest_at(key: str, target: str, size: int) -> None:
    man = json.loads(manifest(key).read_text())
    man["arrays"]["a"].update(file=target, file_bytes=size)
    manifest(key).write_text(json.dumps(man))


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_manifest_file_outside_the_cache_is_neither_read_nor_deleted(tmp_path, how):
    key = "unit/confined"
    a = np.arange(100, dtype=np.int64)
    cached_arrays(key, lambda: {"a": a})
    victim = tmp_path / "victim.npy"  # an old .npy outside the cache, as the clean-up would take
    np.save(victim, np.zeros(100, np.int64))
    old = time.time() - 7200
    os.utime(victim, (old, old))
    before = victim.read_bytes()
    target = "../../victim.npy" if how == "dotdot" else str(victim)
    point_manifest_at(key, target, len(before))
    with pytest.warns(CacheRebuiltWarning, match="outside the cache"):
        np.testing.assert_array_equal(cached_arrays(key, lambda: {"a": a})["a"], a)
    assert victim.read_bytes() == before  # still there, untouched


def test_manifest_naming_a_system_file_is_not_read(monkeypatch):
    key = "unit/passwd"
    cached_arrays(key, lambda: {"a": np.ones(3)})
    point_manifest_at(key, "../../../../../../../../etc/passwd", 1)
    opened = []
    real_stat = type(data.cache_dir()).stat

    def stat(self, *args, **kw):
        opened.append(str(self))
        return real_stat(self, *args, **kw)

    monkeypatch.setattr(type(data.cache_dir()), "stat", stat)
    with pytest.warns(CacheRebuiltWarning, match="outside the cache") as rec:
        cached_arrays(key, lambda: {"a": np.ones(3)})
    assert not any(p.endswith("etc/passwd") for p in opened)
    assert not any("truncated" in str(w.message) for w in rec)
    assert cache.cache_state(key) is not None


def test_corrupt_data_bytes_are_caught_on_first_open_without_verify_setting():
    key = "unit/first-open"
    a = np.arange(4096, dtype=np.float32)
    cached_arrays(key, lambda: {"a": a})
    npy = data.cache_dir() / "arrays" / json.loads(manifest(key).read_text())["arrays"]["a"]["file"]
    raw = bytearray(npy.read_bytes())
    raw[-2000:-1000] = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    st = npy.stat()
    npy.write_bytes(bytes(raw))  # same header and size
    os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns))
    getattr(cache, "VERIFIED", set()).clear()  # a new process
    with pytest.warns(CacheRebuiltWarning, match="checksum"):
        got = cached_arrays(key, lambda: {"a": a})["a"]
    np.testing.assert_array_equal(got, a)


def test_stale_temp_files_are_removed_and_fresh_ones_kept(tmp_path):
    old, new = tmp_path / ".x.index.1.tmp", tmp_path / ".y.index.2.tmp"
    for p in (old, new):
        p.write_bytes(b"half")
    os.utime(old, (time.time() - 7200,) * 2)
    assert cache.remove_stale_temps(tmp_path) == 1
    assert not old.exists() and new.exists()


def test_stale_temp_files_in_every_cache_folder_are_removed_on_start():
    folders = [data.cache_dir() / sub for sub in ("arrays", "faiss", "umap")]
    stale = [f / f".killed-{i}.tmp" for i, f in enumerate(folders)]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\0" * 4096)
        os.utime(p, (time.time() - 7200,) * 2)
    getattr(cache, "SWEEP", None).done = False  # a new process
    cached_arrays("unit/start", lambda: {"a": np.ones(2)})
    assert not any(p.exists() for p in stale)


def png_folder(root, n=3, size=(8, 8)):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("L", size, 40 * i).save(root / f"{i}.png")
    return root


def test_folder_decoding_is_refused_before_any_file_is_opened(tmp_path, monkeypatch):
    d = png_folder(tmp_path / "many", n=20)
    set_max_memory("50kB")  # 20 x 64 x 64 x 3 x 2 bytes = 492 kB
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded before the check"))
    with pytest.raises(ValueError, match=r"decoding 20 images.*max_memory.*lower \?res="):
        load_dataset(f"folder:{d}?res=64")


def test_elongated_png_is_refused_naming_the_file(tmp_path):
    d = png_folder(tmp_path / "thin", n=1)
    Image.new("L", (20000, 1), 128).save(d / "strip.png")  # resizing to 4 would make 80000 x 4
    with pytest.raises(ValueError, match=r"strip\.png is 20000x1 pixels.*delete or resize"):
        load_dataset(f"folder:{d}?res=4")


def test_non_utf8_file_name_loads_and_is_named_in_errors(tmp_path):
    d = png_folder(tmp_path / "names", n=2)
    bad = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8
    Image.new("L", (8, 8), 200).save(d / bad)
    ds = load_dataset(f"folder:{d}?res=8")
    assert ds.N == 3
    (d / os.fsdecode(b"bro\xefken.png")).write_bytes(b"not a png")
    data.DATASETS.clear()
    with pytest.raises(ValueError, match=r"bro\\xefken\.png could not be decoded") as e:
        load_dataset(f"folder:{d}?res=8")
    str(e.value).encode("utf-8")  # printable as UTF-8


def test_16bit_png_is_scaled_to_8_bits(tmp_path):
    d = tmp_path / "deep"
    d.mkdir()
    a = np.array([[57, 65435], [32896, 0]], np.uint16).repeat(4, 0).repeat(4, 1)  # (8, 8)
    Image.fromarray(a).save(d / "deep.png")  # a 16-bit grayscale PNG
    assert Image.open(d / "deep.png").mode.startswith("I")
    u8 = load_dataset(f"folder:{d}?res=8").u8[0, 0]
    want = np.rint(a / 257.0)  # 16-bit -> 8-bit: 65535 maps to 255
    np.testing.assert_array_equal(u8, want)


def test_file_link_outside_the_folder_is_skipped_with_a_count(tmp_path, monkeypatch):
    d = png_folder(tmp_path / "linked", n=2)
    secret = tmp_path / "elsewhere" / "secret.png"
    png_folder(secret.parent, n=0)
    Image.new("L", (8, 8), 99).save(secret)
    (d / "z.png").symlink_to(secret)
    (d / "inner.png").symlink_to(d / "0.png")  # inside: kept
    with pytest.warns(UserWarning, match=r"Skipped 1 file link.*GOLDDIFF_FOLLOW_LINKS=1"):
        ds = load_dataset(f"folder:{d}?res=8")
    assert ds.N == 3
    data.DATASETS.clear()
    monkeypatch.setenv("GOLDDIFF_FOLLOW_LINKS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", CacheRebuiltWarning)
        assert load_dataset(f"folder:{d}?res=8").N == 4
