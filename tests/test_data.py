"""Dataset loaders, the on-disk array cache and downloads, against files written here in each real format."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from golddiff import data
from golddiff.data import cache, download, formats
from golddiff.data import CacheRebuiltWarning, cached_arrays, load_dataset

ROOT = Path(__file__).resolve().parents[1]
REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Per test: own data root, own cache, no Debian folder, no network, empty in-process memo."""
    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setenv("GOLDDIFF_DATA", str(root))
    monkeypatch.setenv("GOLDDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GOLDDIFF_OFFLINE", raising=False)
    monkeypatch.delenv("GOLDDIFF_VERIFY_CACHE", raising=False)
    monkeypatch.setattr(download, "SYSTEM_DATA_DIR", tmp_path / "no-system-datasets")
    data.DATASETS.clear()

    def no_network(url, timeout=30.0):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(download, "_open_url", no_network)
    return root


# ----------------------------------------------------------------------------- writers of the real formats


def idx_bytes(arr: np.ndarray) -> bytes:
    """The idx format written from its specification: 0, 0, type 0x08, ndim, big-endian uint32 sizes, bytes."""
    return (
        bytes([0, 0, 8, arr.ndim])
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


def write_idx_pair(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, arr in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        raw = idx_bytes(arr)
        p = folder / (name + (".gz" if gz else ""))
        p.write_bytes(gzip.compress(raw) if gz else raw)
        out.append(p)
    return out


def small_mnist(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


def cifar_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch laid out like the original: rows of 1024 R, 1024 G, 1024 B bytes, pickled with bytes keys."""
    d = {
        b"batch_label": b"training batch",
        b"labels": labels,
        b"data": images.reshape(len(images), 3 * 32 * 32),
        b"filenames": [b"x.png"] * len(images),
    }
    return pickle.dumps(d, protocol=2)


def unit(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def check_images(ds, n, chw):
    assert ds.images.shape == (n, *chw)
    assert ds.images.dtype == torch.float32
    assert float(ds.images.min()) >= -1.0 and float(ds.images.max()) <= 1.0


def manifest(key: str) -> Path:
    return data.cache_dir() / "arrays" / f"{cache._slug(key)}.json"


# ----------------------------------------------------------------------------- idx datasets


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_idx_loads_with_exact_pixels_and_labels(isolated, name, gz):
    imgs, labels = small_mnist()
    write_idx_pair(isolated / name, imgs, labels, gz)
    ds = load_dataset(name)
    check_images(ds, 12, (1, 28, 28))
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), unit(imgs))
    assert ds.images[3, 0, 5, 7].item() == pytest.approx(imgs[3, 5, 7] / 127.5 - 1, abs=1e-6)
    np.testing.assert_array_equal(ds.labels, labels.astype(np.int64))
    assert ds.labels.dtype == np.int64 and len(ds.classes) == 10


def test_search_order_env_then_system_then_download_cache(isolated, tmp_path, monkeypatch):
    a, b, c = (small_mnist(4, seed)[0] for seed in (1, 2, 3))
    lab = np.zeros(4, np.uint8)
    write_idx_pair(isolated / "mnist", a, lab, gz=True)
    write_idx_pair(download.SYSTEM_DATA_DIR / "mnist", b, lab, gz=False)
    write_idx_pair(data.cache_dir() / "downloads" / "mnist", c, lab, gz=True)
    assert np.array_equal(load_dataset("mnist").u8[:, 0], a)
    for rm, expect in (("GOLDDIFF_DATA", b), ("system", c)):
        if rm == "GOLDDIFF_DATA":
            monkeypatch.delenv("GOLDDIFF_DATA")
        else:
            monkeypatch.setattr(download, "SYSTEM_DATA_DIR", tmp_path / "elsewhere")
        data.DATASETS.clear()
        with pytest.warns(CacheRebuiltWarning, match="different source data"):
            ds = load_dataset("mnist")
        assert np.array_equal(ds.u8[:, 0], expect)


def test_cache_serves_when_the_source_files_are_gone(isolated):
    imgs, labels = small_mnist(6)
    write_idx_pair(isolated / "mnist", imgs, labels, gz=True)
    load_dataset("mnist")
    for p in (isolated / "mnist").iterdir():
        p.unlink()
    data.DATASETS.clear()
    assert data.dataset_status("mnist")[0] == "found"
    np.testing.assert_array_equal(load_dataset("mnist").u8[:, 0], imgs)  # no download attempted


def test_wrong_idx_magic_names_the_file(isolated):
    imgs, labels = small_mnist(3)
    paths = write_idx_pair(isolated / "mnist", imgs, labels, gz=False)
    raw = bytearray(paths[0].read_bytes())
    raw[2] = 0x0D  # float type code instead of unsigned byte
    paths[0].write_bytes(bytes(raw))
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte does not start with an idx header"
    ):
        load_dataset("mnist")


def test_labels_file_given_as_images_is_rejected(isolated):
    imgs, labels = small_mnist(3)
    paths = write_idx_pair(isolated / "mnist", imgs, labels, gz=True)
    paths[0].write_bytes(paths[1].read_bytes())  # a 1-D idx where a 3-D one belongs
    with pytest.raises(ValueError, match="idx header for 3-D"):
        load_dataset("mnist")


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_wrong_idx_length_names_the_file(isolated, gz):
    imgs, labels = small_mnist(3)
    raw = idx_bytes(imgs)[:-100]  # header says 3 images, data is 100 bytes short
    folder = isolated / "fashion-mnist"
    write_idx_pair(folder, imgs, labels, gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(
        ValueError, match=rf"{name} holds {3 * 784 - 100} data bytes but its header"
    ):
        load_dataset("fashion-mnist")


def test_truncated_gzip_and_count_mismatch(isolated):
    imgs, labels = small_mnist(3)
    paths = write_idx_pair(isolated / "mnist", imgs, labels, gz=True)
    whole = paths[0].read_bytes()
    paths[0].write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="not a complete gzip file"):
        load_dataset("mnist")
    write_idx_pair(isolated / "mnist", imgs, labels[:2], gz=True)
    with pytest.raises(ValueError, match="has 3 images but .* has 2 labels"):
        load_dataset("mnist")


# ----------------------------------------------------------------------------- the decoded-array cache


def test_cache_written_then_memory_mapped(isolated, monkeypatch):
    imgs, labels = small_mnist()
    write_idx_pair(isolated / "fashion-mnist", imgs, labels, gz=True)
    load_dataset("fashion-mnist")
    man = json.loads(manifest("dataset/fashion-mnist/res28").read_text())
    assert (
        man["arrays"]["images"]["shape"] == [12, 1, 28, 28]
        and man["arrays"]["images"]["dtype"] == "uint8"
    )
    monkeypatch.setattr(
        formats, "read_idx", lambda *a: pytest.fail("a cached dataset must not be decoded again")
    )
    data.DATASETS.clear()
    ds = load_dataset("fashion-mnist")
    assert isinstance(ds.u8, np.memmap) and not ds.u8.flags.writeable
    np.testing.assert_array_equal(ds.u8[:, 0], imgs)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), unit(imgs))


def test_truncated_cache_file_is_detected_and_rebuilt(isolated):
    imgs, labels = small_mnist()
    write_idx_pair(isolated / "mnist", imgs, labels, gz=False)
    load_dataset("mnist")
    man = json.loads(manifest("dataset/mnist/res28").read_text())
    npy = data.cache_dir() / "arrays" / man["arrays"]["images"]["file"]
    npy.write_bytes(npy.read_bytes()[:5000])
    assert cache.cache_state("dataset/mnist/res28") is None
    data.DATASETS.clear()
    with pytest.warns(CacheRebuiltWarning, match="truncated"):
        ds = load_dataset("mnist")
    np.testing.assert_array_equal(ds.u8[:, 0], imgs)
    assert cache.cache_state("dataset/mnist/res28") is not None
    assert not npy.exists()  # the broken file of the old build was cleaned up


def test_cache_from_another_version_or_corrupt_bytes_is_rebuilt():
    key = "unit/version"
    a = np.arange(1000, dtype=np.int32)
    cached_arrays(key, lambda: {"a": a})
    man = json.loads(manifest(key).read_text())
    man["version"] = cache.CACHE_VERSION + 1
    manifest(key).write_text(json.dumps(man))
    with pytest.warns(CacheRebuiltWarning, match="another cache version"):
        np.testing.assert_array_equal(cached_arrays(key, lambda: {"a": a})["a"], a)
    npy = data.cache_dir() / "arrays" / json.loads(manifest(key).read_text())["arrays"]["a"]["file"]
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF  # same size, one flipped byte: only the checksum sees it
    npy.write_bytes(bytes(raw))
    with pytest.warns(CacheRebuiltWarning, match="checksum"):  # a changed file is verified again
        np.testing.assert_array_equal(cached_arrays(key, lambda: {"a": a})["a"], a)
    cached_arrays(key, lambda: pytest.fail("a verified entry is not rebuilt"))
    npy = data.cache_dir() / "arrays" / json.loads(manifest(key).read_text())["arrays"]["a"]["file"]
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    with pytest.warns(CacheRebuiltWarning, match="checksum"):
        np.testing.assert_array_equal(cached_arrays(key, lambda: {"a": a}, verify=True)["a"], a)
    manifest(key).write_text("{not json")
    with pytest.warns(CacheRebuiltWarning, match="unreadable"):
        cached_arrays(key, lambda: {"a": a})


def test_cached_arrays_round_trip_dtypes_and_meta():
    built = {
        "f": np.linspace(0, 1, 7, dtype=np.float32).reshape(7, 1),
        "i": np.array([-5, 2**40], np.int64),
        "b": np.array([True, False]),
        "empty": np.zeros((0, 3), np.uint8),
        "s": np.array(["ab", "c"]),
    }
    calls = []

    def build():
        calls.append(1)
        return built

    for _ in range(2):
        out = cached_arrays("unit/round trip", build, meta={"n": 1})
        assert set(out) == set(built)
        for k in built:
            assert out[k].dtype == built[k].dtype and out[k].shape == built[k].shape
            np.testing.assert_array_equal(out[k], built[k])
    assert len(calls) == 1 and isinstance(out["f"], np.memmap)
    with pytest.warns(CacheRebuiltWarning, match="different source data"):
        cached_arrays("unit/round trip", build, meta={"n": 2})
    assert len(calls) == 2
    assert data.cached_arrays("unit/one", lambda: {"array": np.eye(3)})["array"].shape == (3, 3)
    with pytest.raises(TypeError, match="letters, digits"):
        cached_arrays("unit/bad name", lambda: {"a b": np.zeros(1)})


def test_unwritable_cache_folder_warns_and_returns_the_arrays(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GOLDDIFF_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="in memory only"):
        out = cached_arrays("unit/nowhere", lambda: {"a": np.ones(4)})
    np.testing.assert_array_equal(out["a"], np.ones(4))


def test_concurrent_threads_build_once_and_leave_a_valid_entry():
    calls, results = [], []

    def build():
        calls.append(1)
        time.sleep(0.3)
        return {"x": np.arange(50_000, dtype=np.float64)}

    threads = [
        threading.Thread(target=lambda: results.append(cached_arrays("unit/threads", build)["x"]))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 4
    for r in results:
        np.testing.assert_array_equal(r, np.arange(50_000))
    np.testing.assert_array_equal(
        cached_arrays("unit/threads", build, verify=True)["x"], np.arange(50_000)
    )


def test_concurrent_writers_without_lock_still_commit_atomically(monkeypatch):
    """Even with the lock disabled, racing writers leave one consistent entry (the manifest swap commits)."""
    import contextlib

    monkeypatch.setattr(cache, "_build_lock", lambda key: contextlib.nullcontext())
    errors = []

    def worker(v):
        try:
            for _ in range(5):
                cache._write_entry(
                    "unit/race",
                    {"a": np.full(20_000, v, np.int32), "b": np.full(3, v, np.int8)},
                    None,
                )
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(v,)) for v in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    out, reason = cache._read_entry("unit/race", None, verify=True)
    assert reason is None and out is not None
    assert out["a"][0] == out["b"][0] and np.all(
        out["a"] == out["a"][0]
    )  # both arrays from one writer


def test_two_processes_build_the_same_key(tmp_path):
    script = (
        "import sys, time, numpy as np\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from golddiff.data import cached_arrays\n"
        "def build():\n"
        "    open(sys.argv[1], 'a').write('built\\n'); time.sleep(1.0)\n"
        "    return {'x': np.arange(200_000, dtype=np.int64)}\n"
        "x = cached_arrays('unit/processes', build)['x']\n"
        "assert int(x.sum()) == 199_999 * 200_000 // 2\n"
    )
    log = tmp_path / "builds.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(log)], env=env) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert log.read_text().count("built") == 1
    out, reason = cache._read_entry("unit/processes", None, verify=True)
    assert reason is None and out["x"][-1] == 199_999


# ----------------------------------------------------------------------------- CIFAR-10


def cifar_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_cifar_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    all_x, all_y = [], []
    for i in range(1, 6):
        x, y = cifar_images(2, i), [(2 * i) % 10, (2 * i + 1) % 10]
        (folder / f"data_batch_{i}").write_bytes(cifar_batch(x, y))
        all_x.append(x)
        all_y += y
    (folder / "test_batch").write_bytes(cifar_batch(cifar_images(2, 99), [0, 0]))  # must be ignored
    return np.concatenate(all_x), np.array(all_y)


def test_cifar_batch_folder(isolated):
    x, y = write_cifar_folder(isolated / "cifar10" / "cifar-10-batches-py")
    ds = load_dataset("cifar10")
    check_images(ds, 10, (3, 32, 32))
    np.testing.assert_array_equal(ds.u8, x)
    # row layout: the first 1024 bytes of a row are the red plane, row-major
    row = x[0].reshape(-1)
    assert ds.u8[0, 0, 1, 2] == row[32 + 2] and ds.u8[0, 2, 0, 0] == row[2048]
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.classes[0] == "airplane"


def test_cifar_tar_gz(isolated, tmp_path):
    x, y = write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    (isolated / "cifar10").mkdir()
    with tarfile.open(isolated / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10")
    np.testing.assert_array_equal(ds.u8, x)
    np.testing.assert_array_equal(ds.labels, y)


def test_cifar_pickle_with_code_is_refused(isolated):
    folder = isolated / "cifar10"
    write_cifar_folder(folder)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR-10 python batch"):
        load_dataset("cifar10")


def test_cifar_wrong_row_size(isolated):
    folder = isolated / "cifar10"
    write_cifar_folder(folder)
    (folder / "data_batch_2").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2)
    )
    with pytest.raises(ValueError, match=r"data_batch_2 holds data of shape \[2, 100\]"):
        load_dataset("cifar10")


# ----------------------------------------------------------------------------- folders of images


def test_folder_mixed_modes_sizes_and_extensions(tmp_path):
    d = tmp_path / "imgs"
    (d / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(a, "RGB").save(d / "a.png")  # RGB, already 32x32
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8), "L").save(d / "b.jpg")
    rgba = np.zeros((48, 64, 4), np.uint8)  # fully transparent
    Image.fromarray(rgba, "RGBA").save(d / "c.webp", lossless=True)
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8), "L").convert("P").save(
        d / "d.bmp"
    )
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L").save(
        d / "nested" / "e.PNG"
    )
    (d / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{d}")
    check_images(ds, 5, (3, 32, 32))
    np.testing.assert_array_equal(ds.u8[0], a.transpose(2, 0, 1))  # sorted: a, b, c, d, nested/e
    assert np.all(ds.u8[2] == 255)  # transparent -> white
    assert np.all(ds.labels == -1) and ds.classes == []
    small = load_dataset(f"folder:{d}?res=16")
    check_images(small, 5, (3, 16, 16))


def test_folder_of_grayscale_is_one_channel_with_exact_centre_crop(tmp_path):
    d = tmp_path / "gray"
    d.mkdir()
    g = np.random.default_rng(1).integers(0, 256, (32, 40), dtype=np.uint8)  # H=32, W=40
    Image.fromarray(g, "L").save(d / "wide.png")
    rgb_gray = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8)[..., None] * 4, 3, axis=2)
    Image.fromarray(rgb_gray, "RGB").resize((32, 32), Image.Resampling.NEAREST).save(
        d / "z_rgb_but_gray.png"
    )
    ds = load_dataset(f"folder:{d}")
    check_images(ds, 2, (1, 32, 32))
    np.testing.assert_array_equal(ds.u8[0, 0], g[:, 4:36])  # 40 -> centre 32 columns
    np.testing.assert_array_equal(ds.images[0, 0].numpy(), unit(g[:, 4:36]))


def test_folder_subfolders_become_classes(tmp_path):
    d = tmp_path / "classes"
    for cls, n in (("dogs", 2), ("cats", 3)):
        (d / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (10 * i, 0, 0)).save(d / cls / f"{i}.png")
    ds = load_dataset(f"folder:{d}")
    assert ds.classes == ["cats", "dogs"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1])


def test_folder_corrupt_image_raises_naming_it(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    Image.new("L", (32, 32), 7).save(d / "good.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buf, "PNG"
    )
    (d / "truncated.png").write_bytes(buf.getvalue()[:300])
    with pytest.raises(ValueError, match=r"truncated\.png could not be decoded.*delete or replace"):
        load_dataset(f"folder:{d}")
    (d / "truncated.png").unlink()
    (d / "garbage.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"garbage\.jpg could not be decoded"):
        load_dataset(f"folder:{d}")


def test_folder_errors_empty_missing_bad_resolution(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no png/jpg/jpeg/webp/bmp images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="whole number from 4 to 1024"):
        load_dataset(f"folder:{tmp_path}?res=big")
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("folder:")


def test_folder_change_rebuilds_cache(tmp_path):
    d = tmp_path / "grow"
    d.mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(d / "a.png")
    assert load_dataset(f"folder:{d}").N == 1
    Image.new("RGB", (32, 32), (4, 5, 6)).save(d / "b.png")
    data.DATASETS.clear()
    with pytest.warns(CacheRebuiltWarning, match="different source data"):
        ds = load_dataset(f"folder:{d}")
    assert ds.N == 2 and tuple(ds.u8[1, :, 0, 0]) == (4, 5, 6)


# ----------------------------------------------------------------------------- downloads


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes, fail_after: int | None = None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}
        self.fail_after = fail_after

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise OSError("connection reset")
        return super().read(min(n, 4096) if n and n > 0 else n)


def serve(
    monkeypatch, table: dict[str, bytes | Exception], fail_after: int | None = None
) -> list[str]:
    asked = []

    def opener(url, timeout=30.0):
        asked.append(url)
        item = table.get(url, OSError(f"404 for {url}"))
        if isinstance(item, Exception):
            raise item
        return FakeResponse(item, fail_after)

    monkeypatch.setattr(download, "_open_url", opener)
    return asked


def fake_remote_set(monkeypatch, name: str, payloads: dict[str, bytes]) -> dict[str, bytes]:
    """Swap the registry's remotes for two mirrors each (first down), with the md5 of our payloads."""
    fs = data.REGISTRY[name].files
    remotes = tuple(
        download.Remote(
            f, hashlib.md5(b).hexdigest(), (f"https://down.example/{f}", f"https://ok.example/{f}")
        )
        for f, b in payloads.items()
    )
    monkeypatch.setattr(data.REGISTRY[name], "files", dataclasses.replace(fs, remotes=remotes))
    return {f"https://ok.example/{f}": b for f, b in payloads.items()}


def test_download_with_progress_and_mirror_fallback(monkeypatch):
    imgs, labels = small_mnist(5)
    payloads = {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(imgs)),
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(labels)),
    }
    asked = serve(monkeypatch, fake_remote_set(monkeypatch, "mnist", payloads))
    assert data.dataset_status("mnist")[0] == "downloadable"
    seen = []
    ds = load_dataset("mnist", progress=lambda done, total: seen.append((done, total)))
    np.testing.assert_array_equal(ds.u8[:, 0], imgs)
    assert asked[0].startswith("https://down.example/") and asked[1].startswith(
        "https://ok.example/"
    )
    sizes = sorted(len(b) for b in payloads.values())
    finals = sorted(done for done, total in seen if done == total)
    assert finals == sizes  # each file reported complete, with its size
    assert all(0 < done <= total for done, total in seen)
    dl = data.cache_dir() / "downloads" / "mnist"
    assert sorted(p.name for p in dl.iterdir()) == sorted(payloads)
    assert data.dataset_status("mnist")[0] == "found"


def test_download_checksum_mismatch_leaves_nothing(monkeypatch):
    bad = gzip.compress(b"definitely not fashion-mnist")
    host = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    serve(
        monkeypatch,
        {host + "train-images-idx3-ubyte.gz": bad, host + "train-labels-idx1-ubyte.gz": bad},
    )
    with pytest.raises(
        ValueError, match=r"md5 is [0-9a-f]{32}, not 8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    ) as e:
        load_dataset("fashion-mnist")
    assert "dataset-fashion-mnist" in str(e.value) and str(e.value).count(". ") == 0
    dl = data.cache_dir() / "downloads" / "fashion-mnist"
    assert not dl.exists() or list(dl.iterdir()) == []


def test_interrupted_download_leaves_nothing(monkeypatch):
    imgs, labels = small_mnist(40)
    payloads = {
        "train-images-idx3-ubyte.gz": idx_bytes(imgs),
        "train-labels-idx1-ubyte.gz": idx_bytes(labels),
    }
    serve(monkeypatch, fake_remote_set(monkeypatch, "mnist", payloads), fail_after=8192)
    with pytest.raises(ValueError, match="connection reset"):
        load_dataset("mnist")
    assert list((data.cache_dir() / "downloads" / "mnist").iterdir()) == []


def test_missing_offline_names_package_and_folder(isolated, monkeypatch):
    with pytest.raises(ValueError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    assert (
        "network disabled" in msg
        and "dataset-fashion-mnist" in msg
        and str(isolated / "fashion-mnist") in msg
    )
    monkeypatch.setenv("GOLDDIFF_OFFLINE", "1")
    monkeypatch.setattr(
        download, "_open_url", lambda *a, **k: pytest.fail("offline must not touch the network")
    )
    with pytest.raises(
        ValueError, match="GOLDDIFF_OFFLINE forbids downloading; install the Debian package"
    ):
        load_dataset("fashion-mnist")
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10")


# ----------------------------------------------------------------------------- registry and info


def test_describe_datasets_reports_found_and_cache(isolated, monkeypatch):
    monkeypatch.setenv("GOLDDIFF_OFFLINE", "1")
    lines = {l.split()[0]: l for l in data.describe_datasets()}
    assert (
        set(lines)
        == set(data.dataset_names())
        >= {"mnist-5k", "digits", "moons", "gmm", "fashion-mnist", "mnist", "cifar10"}
    )
    assert "not found" in lines["cifar10"] and "not cached" in lines["cifar10"]
    monkeypatch.delenv("GOLDDIFF_OFFLINE")
    assert "downloadable" in {l.split()[0]: l for l in data.describe_datasets()}["cifar10"]
    write_idx_pair(isolated / "mnist", *small_mnist(), gz=True)
    assert "found" in {l.split()[0]: l for l in data.describe_datasets()}["mnist"]
    load_dataset("mnist")
    line = {l.split()[0]: l for l in data.describe_datasets()}["mnist"]
    assert "cached 0.0 MB" in line  # 12 images of 784 bytes: about 10 kB
    assert data.dataset_status("mnist") == ("found", cache.cache_state("dataset/mnist/res28"))


def test_unknown_name_lists_choices():
    with pytest.raises(
        ValueError, match="Unknown dataset 'nope'; choose one of: mnist-5k.*folder:PATH"
    ):
        load_dataset("nope")


def test_corpus_stats_disk_cache(monkeypatch):
    from golddiff.denoise.corpus import Corpus
    from golddiff.core.stats import DataStats

    x = torch.from_numpy(np.random.default_rng(3).uniform(-1, 1, (40, 1, 3, 3)).astype(np.float32))
    ds = data.Dataset("toy-stats", x, np.zeros(40, np.int64))
    first = Corpus(ds, torch.device("cpu")).stats
    with monkeypatch.context() as m:
        m.setattr(
            DataStats,
            "from_data",
            lambda X: pytest.fail("statistics must come from the disk cache"),
        )
        second = Corpus(ds, torch.device("cpu")).stats
    for k in ("mean", "eigvals", "eigvecs"):
        assert torch.equal(getattr(first, k), getattr(second, k))
    # independent check: eigenvalues of the population covariance computed here
    flat = x.reshape(40, -1).double()
    cov = (flat - flat.mean(0)).T @ (flat - flat.mean(0)) / 40
    assert torch.allclose(
        second.eigvals.double(), torch.linalg.eigvalsh(cov).flip(0).clamp_min(0), atol=1e-5
    )
    other = data.Dataset(
        "toy-stats", -x, np.zeros(40, np.int64)
    )  # same name and size, other content
    assert torch.allclose(Corpus(other, torch.device("cpu")).stats.mean, -first.mean, atol=1e-6)


# ----------------------------------------------------------------------------- the real Fashion-MNIST


@pytest.mark.skipif(
    not (REAL_FASHION / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(download, "SYSTEM_DATA_DIR", REAL_FASHION.parent)
    ds = load_dataset("fashion-mnist")
    check_images(ds, 60_000, (1, 28, 28))
    assert np.bincount(ds.labels).tolist() == [6000] * 10
    assert ds.classes[9] == "Ankle boot"


KILL_MIDWAY = r"""
import os, signal, sys
import numpy as np
from golddiff import data

real_save = np.save
def save_half_then_die(f, a, allow_pickle=False):
    raw = a.tobytes()
    f.write(raw[: len(raw) // 2])          # half the array reaches the disk ...
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)   # ... then the process is killed, mid-write
if sys.argv[1] == "kill":
    np.save = save_half_then_die
version = int(sys.argv[2])
data.cached_arrays("killtest/x", lambda: {"x": np.full(200_000, version, np.int32)}, meta={"v": version})
print("done")
"""


def test_cache_write_killed_midway_is_recovered_by_the_next_run(tmp_path, monkeypatch):
    """A process SIGKILLed in the middle of writing a cache entry leaves no entry that loads; the next run
    rebuilds it, whether or not an older entry existed."""
    import signal
    import warnings
    from conftest import ROOT

    monkeypatch.setenv("GOLDDIFF_CACHE", str(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = tmp_path / "kill.py"
    script.write_text(KILL_MIDWAY)

    def run(mode, version):
        return subprocess.run(
            [sys.executable, str(script), mode, str(version)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = run("kill", 1)  # first build ever, killed
    assert r.returncode == -signal.SIGKILL and "done" not in r.stdout
    assert run("ok", 1).returncode == 0  # next run rebuilds
    assert run("kill", 2).returncode == -signal.SIGKILL  # rebuild over a valid entry, killed
    with pytest.warns(CacheRebuiltWarning):  # the user is told the old entry was replaced
        got = data.cached_arrays(
            "killtest/x", lambda: {"x": np.full(200_000, 2, np.int32)}, meta={"v": 2}
        )["x"]
    assert got.shape == (200_000,) and (np.asarray(got) == 2).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # now a clean, memory-mapped hit
        again = data.cached_arrays(
            "killtest/x", lambda: pytest.fail("rebuilt a valid entry"), meta={"v": 2}
        )
    assert (np.asarray(again["x"]) == 2).all()


def test_atomic_write_keeps_the_old_file_and_no_temp_when_the_write_fails(tmp_path):
    folder = tmp_path / "atomic"
    folder.mkdir()
    target = folder / "out.bin"
    cache.atomic_write(target, lambda p: p.write_bytes(b"old"))

    def half_then_fail(p):
        p.write_bytes(b"ne")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old" and sorted(x.name for x in folder.iterdir()) == ["out.bin"]
    cache.atomic_write(target, lambda p: p.write_bytes(b"new"))
    assert target.read_bytes() == b"new" and sorted(x.name for x in folder.iterdir()) == ["out.bin"]


def test_failed_download_names_every_mirror_it_tried(monkeypatch):
    """When all mirrors fail, the message says which failed and why (not only the
    last); the real MNIST list has more than one mirror."""
    assert len(data.REGISTRY["mnist"].files.remotes[0].urls) >= 3
    serve(monkeypatch, {})  # every url answers 404
    fake_remote_set(monkeypatch, "mnist", {"train-images-idx3-ubyte.gz": b"x"})
    with pytest.raises(ValueError) as e:
        load_dataset("mnist")
    assert "https://down.example/" in str(e.value) and "https://ok.example/" in str(e.value)
