"""Out-of-core corpora: uint8 rows on disk, converted on demand, give the same samples as in-core;
the 16-copy augmented build; the memory guard; screening without a (B, N) scan."""

import numpy as np
import pytest
import torch

from golddiff import NoiseSchedule, make_denoiser, sample
from golddiff.data import cache, cached_arrays, set_max_memory
from golddiff.data.augmented import COPIES, SHIFTS, augmented16, transform
from golddiff.data.datasets import from_u8
from golddiff.denoise import retrieval
from golddiff.denoise.corpus import CORPORA, get_corpus
from golddiff.denoise.retrieval import ProxyIndex, exact_topk, to_proxy


def _source(n=20, seed=0):
    """n uint8 images (n, 1, 28, 28): smooth blobs on a black background, like Fashion-MNIST."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    cy, cx = rng.uniform(8, 20, (2, n, 1, 1))
    r = rng.uniform(3, 8, (n, 1, 1))
    img = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    img *= rng.uniform(0.5, 1.0, (n, 28, 28))  # texture
    return img.round().astype(np.uint8)[:, None]


@pytest.fixture(autouse=True)
def _clean():
    CORPORA.clear()
    yield
    CORPORA.clear()
    set_max_memory(None)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same 320-image x16-style corpus in-core and out-of-core (built in the tests' cache)."""
    u8, labels, classes = _source(), np.arange(20) % 10, [str(i) for i in range(10)]
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GOLDDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        a = augmented16("x16-small", u8, labels, classes, out_of_core=False)
        b = augmented16("x16-small", u8, labels, classes, out_of_core=True)
    return a, b


def test_transform_is_a_shift_or_a_mirrored_shift():
    u8 = _source(3)
    np.testing.assert_array_equal(transform(u8, 0), u8)
    np.testing.assert_array_equal(transform(u8, len(SHIFTS)), u8[..., ::-1])
    j = SHIFTS.index((1, -1))
    out = transform(u8, j)  # pixel (y, x) moves to (y + 1, x - 1); the row and column left are 0
    np.testing.assert_array_equal(out[..., 1:, :27], u8[..., :27, 1:])
    assert not out[..., 0, :].any() and not out[..., :, 27].any()


def test_augmented_cache_holds_every_copy_and_loads_memory_mapped(pair):
    ds_in, ds_out = pair
    u8 = _source()
    assert ds_out.N == COPIES * 20 and ds_out.out_of_core and not ds_in.out_of_core
    assert isinstance(ds_out.u8, np.memmap)
    for j in (0, 5, 13):
        np.testing.assert_array_equal(ds_out.u8[j * 20 : (j + 1) * 20], transform(u8, j))
    np.testing.assert_array_equal(ds_out.labels, np.tile(np.arange(20) % 10, COPIES))
    idx = np.array([3, 250, 7])
    torch.testing.assert_close(ds_out.rows(idx), ds_in.flat()[idx], rtol=0, atol=0)
    starts = [i for i, _ in ds_out.chunks(100)]
    assert starts == [0, 100, 200, 300]
    with pytest.raises(ValueError, match="out-of-core"):
        ds_out.flat()


def test_streamed_cache_entry_is_not_left_half_written(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDDIFF_CACHE", str(tmp_path))

    def fill(out):
        out[:2] = 1
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError):
        cached_arrays("t/streamed", lambda: {"a": cache.Streamed((4, 3), np.uint8, fill)})
    arrays = tmp_path / "arrays"
    assert [p.name for p in arrays.iterdir() if p.suffix in (".npy", ".json", ".tmp")] == []


@pytest.mark.parametrize(
    "method,extra",
    [
        ("golddiff", dict(pool="random")),
        ("golddiff", dict(pool="nearest", backend="faiss-ivf")),
        ("golddiff", dict(pool="auto")),
        ("pca", {}),
        ("optimal", {}),
        ("wiener", {}),
    ],
)
def test_out_of_core_gives_the_same_samples_as_in_core(pair, method, extra):
    if extra.get("backend", "").startswith("faiss"):
        pytest.importorskip("faiss")
    sched, trajs = NoiseSchedule(), []
    for ds in pair:
        den = make_denoiser(method, ds, sched, device="cpu", **extra)
        assert den.corpus.out_of_core == ds.out_of_core
        trajs.append(sample(den, sched, steps=5, n=3, seed=1))
    a, b = trajs
    np.testing.assert_allclose(a.samples, b.samples, atol=1e-4)
    for ra, rb in zip(a.records, b.records):
        if ra.subset_idx is not None:
            assert [set(r) for r in ra.subset_idx] == [set(r) for r in rb.subset_idx]
        np.testing.assert_allclose(ra.entropy, rb.entropy, rtol=1e-4, atol=1e-5)


def test_memory_guard_refuses_an_in_core_corpus_before_allocating(monkeypatch):
    u8 = np.random.default_rng(0).integers(0, 256, (20000, 1, 8, 8), dtype=np.uint8)
    set_max_memory("3MB")  # the float32 images need 5.1 MB
    from golddiff.data import datasets

    def no_alloc(_):
        raise AssertionError("allocated before the guard refused")

    with monkeypatch.context() as m:
        m.setattr(datasets, "to_unit_range", no_alloc)
        with pytest.raises(ValueError, match="float32 images of 'big'.*max_memory"):
            from_u8("big", u8, np.zeros(20000), [])
        ds = from_u8("big", u8, np.zeros(20000), [], out_of_core=True)  # rows stay uint8
    den = make_denoiser("golddiff", ds, device="cpu", k_min=50, k_max=100, low_res=4)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    assert den.denoise(x, 500).x0_hat.shape == (2, 64)
    set_max_memory("1MB")  # now the out-of-core proxies (1.4 MB) cannot fit either
    CORPORA.clear()
    with pytest.raises(ValueError, match="proxy index of 'big'"):
        make_denoiser("golddiff", ds, device="cpu", k_min=50, k_max=100, low_res=4)


def test_half_precision_proxies_are_screened_exactly_in_chunks(monkeypatch):
    g = torch.Generator().manual_seed(0)
    P = (torch.rand(5000, 16, generator=g) * 2 - 1).half()
    q = torch.randn(3, 16, generator=g)
    sq = P.float().square().sum(1)
    monkeypatch.setattr(retrieval, "BLOCK_ELEMS", 3000)  # many chunks
    pool = torch.stack([torch.randperm(5000, generator=g)[:900] for _ in range(3)])
    for p in (None, pool):
        got = exact_topk(q, P, sq, 0.7, 40, p)
        want = exact_topk(q, P.float(), sq, 0.7, 40, p)
        assert [set(r.tolist()) for r in got] == [set(r.tolist()) for r in want]


def test_ivf_pool_search_with_every_list_probed_equals_the_exact_pool_screen(monkeypatch):
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    X = torch.rand(3000, 64, generator=g) * 2 - 1
    P = to_proxy(X, (1, 8, 8), 4)
    index = ProxyIndex(None, (1, 8, 8), 4, "faiss-ivf", 30, "pooltest", P, pool_index=True)
    monkeypatch.setattr(retrieval, "GATHER_ELEMS", 0)  # force the id-selector search
    q = torch.randn(4, 16, generator=g)
    pool = torch.stack([torch.randperm(3000, generator=g)[:1200].sort().values for _ in range(4)])
    got = index.search(q, 0.5, 50, pool, nprobe=30)  # all 30 lists: exact within the pool
    want = exact_topk(q, P, index.sqnorm, 0.5, 50, pool)
    assert [set(r.tolist()) for r in got] == [set(r.tolist()) for r in want]
    assert all(set(r.tolist()) <= set(p.tolist()) for r, p in zip(got, pool))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_out_of_core_on_cuda_matches_the_cpu(pair):
    _, ds = pair
    sched, out = NoiseSchedule(), []
    for device in ("cpu", "cuda"):
        den = make_denoiser("golddiff", ds, sched, device=device, pool="nearest")
        out.append(sample(den, sched, steps=5, n=3, seed=1).samples)
    np.testing.assert_allclose(out[0], out[1], atol=1e-3)


def test_folder_decoded_on_several_processes_equals_one_process(tmp_path, monkeypatch):
    from PIL import Image

    from golddiff.data import folder

    rng = np.random.default_rng(0)
    for i in range(23):
        sub = tmp_path / "imgs" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    files, _ = folder._list_images(tmp_path / "imgs")
    serial = folder._decode_files(files, 16)  # (23, 16, 16, 3), one process
    monkeypatch.setattr(folder, "DECODE_CHUNK", 5)
    monkeypatch.setattr(folder, "PARALLEL_FROM", 10)
    ds = folder.load_folder(f"folder:{tmp_path / 'imgs'}?res=16")
    np.testing.assert_array_equal(ds.u8, serial.transpose(0, 3, 1, 2))
    assert list(ds.labels) == [0] * 11 + [1] * 12 and ds.classes == ["a", "b"]  # sorted paths
    assert not list(cache.cache_dir().joinpath("tmp").glob("*"))  # the decode buffer is gone
