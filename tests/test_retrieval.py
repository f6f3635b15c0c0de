"""Proxy space and candidate search: backends against each other and against brute-force numpy."""

import math
import re

import numpy as np
import pytest
import torch

from golddiff import NoiseSchedule, make_denoiser
from golddiff.data import Dataset
from golddiff.run.records import make_record
from golddiff.denoise.retrieval import (
    BACKENDS,
    ProxyIndex,
    auto_nprobe,
    check_backend,
    fine_select,
    to_proxy,
)

faiss = pytest.importorskip("faiss")


def _random_images(N, C=1, H=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N, C * H * H, generator=g) * 2 - 1  # continuous: no distance ties


def _clustered(N, d, n_clusters=20, seed=0):
    """Structured data: tight clusters around random centres (what IVF is built for)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1, 1, (n_clusters, d))
    lab = rng.integers(0, n_clusters, N)
    return torch.from_numpy((centres[lab] + 0.15 * rng.standard_normal((N, d))).astype(np.float32))


def _np_topk(q, P, scale, k, allowed=None):
    """Brute force: sort ||q - scale p_i||^2 in float64 numpy; returns sets of the k smallest per row."""
    q, P = q.double().numpy(), P.double().numpy()
    d = ((q[:, None, :] - scale * P[None]) ** 2).sum(-1)  # (B, N)
    if allowed is not None:
        d = np.where(allowed, d, np.inf)
    return [set(np.argsort(row, kind="stable")[:k].tolist()) for row in d]


def test_proxy_pooling_equals_manual_numpy_average():
    X = _random_images(5, C=3, H=8)
    P = to_proxy(X, (3, 8, 8), 4).numpy()
    manual = X.numpy().reshape(5, 3, 4, 2, 4, 2).mean(axis=(3, 5)).reshape(5, -1)
    np.testing.assert_allclose(P, manual, atol=1e-6)


def test_proxy_resolution_that_does_not_divide_is_a_clear_error():
    with pytest.raises(ValueError, match="does not divide"):
        to_proxy(_random_images(2), (1, 8, 8), 3)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        check_backend("annoy")
    assert all(b in str(e.value) for b in BACKENDS)
    with pytest.raises(ValueError, match="faiss-ivf"):
        check_backend("torch", nprobe=4)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_exact_backends_equal_brute_force(backend):
    X = _random_images(500)
    ix = ProxyIndex(X, (1, 8, 8), 4, backend)
    q = to_proxy(_random_images(6, seed=1), (1, 8, 8), 4)
    s = math.sqrt(0.3)
    got = ix.search(q, s, 40)
    assert got.shape == (6, 40)
    assert [set(r.tolist()) for r in got] == _np_topk(q, ix.P, s, 40)


def test_pool_restricted_search_equals_brute_force():
    N, B, m, k = 400, 5, 120, 30
    X = _random_images(N)
    g = torch.Generator().manual_seed(3)
    pool = torch.stack([torch.randperm(N, generator=g)[:m] for _ in range(B)])
    allowed = np.zeros((B, N), bool)
    allowed[np.arange(B)[:, None], pool.numpy()] = True
    q = to_proxy(_random_images(B, seed=2), (1, 8, 8), 4)
    expect = _np_topk(q, to_proxy(X, (1, 8, 8), 4), 0.8, k, allowed)
    for backend in ("torch", "faiss", "faiss-ivf"):
        got = ProxyIndex(X, (1, 8, 8), 4, backend).search(q, 0.8, k, pool)
        assert [set(r.tolist()) for r in got] == expect, backend


def test_ivf_recall_at_default_nprobe_is_high_on_structured_data():
    N, d, k = 4000, 16, 400
    P = _clustered(N, d)
    ix = ProxyIndex(P, (1, 4, 4), 4, "faiss-ivf")  # low_res = H: the proxy is P itself
    assert ix.nlist == round(math.sqrt(N)) and ix.approximate
    x0 = P[:32]
    s = math.sqrt(0.5)
    q = s * x0 + math.sqrt(0.5) * 0.3 * torch.randn(
        32, d, generator=torch.Generator().manual_seed(0)
    )
    got = ix.search(q, s, k)
    expect = _np_topk(q, P, s, k)
    recall = np.mean([len(set(r.tolist()) & e) / k for r, e in zip(got, expect)])
    assert recall >= 0.95
    assert auto_nprobe(ix.nlist, k, N) < ix.nlist  # it really is approximate at the default


def test_ivf_recall_stays_high_at_low_snr():
    # at low SNR the query q / sqrt(abar) lies far from every proxy; the default probes more lists
    # (without clusters, so that the few lists probed at high SNR would miss a third of them)
    N, d, k = 4000, 16, 100
    g = torch.Generator().manual_seed(0)
    P = torch.randn(N, d, generator=g) * torch.linspace(1.0, 0.2, d)  # decaying spectrum
    ix = ProxyIndex(P, (1, 4, 4), 4, "faiss-ivf")
    abar = 0.001 / 1.001  # SNR 0.001
    s = math.sqrt(abar)
    q = s * P[:32] + math.sqrt(1 - abar) * torch.randn(32, d, generator=g)
    got = ix.search(q, s, k)
    expect = _np_topk(q, P, s, k)
    recall = np.mean([len(set(r.tolist()) & e) / k for r, e in zip(got, expect)])
    assert recall >= 0.95
    assert auto_nprobe(ix.nlist, k, N, s) > auto_nprobe(ix.nlist, k, N, 1.0)
    assert auto_nprobe(ix.nlist, k, N, s) < ix.nlist  # still approximate


def test_ivf_index_is_cached_on_disk_and_reloaded():
    X = _clustered(1000, 16)
    a = ProxyIndex(X, (1, 4, 4), 4, "faiss-ivf", name="toy/1")
    assert a.cache_path is not None and a.cache_path.exists() and "/" not in a.cache_path.name
    mtime = a.cache_path.stat().st_mtime_ns
    b = ProxyIndex(X, (1, 4, 4), 4, "faiss-ivf", name="toy/1")
    assert b.cache_path == a.cache_path and b.cache_path.stat().st_mtime_ns == mtime
    q = X[:4] + 0.01
    assert torch.equal(a.search(q, 1.0, 50, nprobe=3), b.search(q, 1.0, 50, nprobe=3))
    assert not list(a.cache_path.parent.glob(".*.tmp"))


def test_fine_select_paths_agree_with_brute_force():
    X = _random_images(300)
    sq = X.square().sum(1)
    xt = _random_images(3, seed=5)
    for c in (20, 200):  # gathered path, then the full-matmul path
        cand = torch.stack(
            [torch.randperm(300, generator=torch.Generator().manual_seed(i))[:c] for i in range(3)]
        )
        got = fine_select(xt, X, sq, cand, 0.6, 10)
        for b in range(3):
            d = ((xt[b].double() - 0.6 * X[cand[b]].double()) ** 2).sum(1)
            assert set(got[b].tolist()) == set(cand[b][d.argsort()[:10]].tolist())


@pytest.fixture(scope="module")
def small_data():
    g = torch.Generator().manual_seed(0)
    return Dataset(
        "rand-retrieval", torch.rand(600, 1, 8, 8, generator=g) * 2 - 1, np.zeros(600, np.int64)
    )


@pytest.mark.parametrize("pool", ["random", "nearest"])
def test_golddiff_faiss_backend_equals_torch_backend(small_data, pool):
    sched = NoiseSchedule()
    outs = {}
    for backend in ("torch", "faiss"):
        den = make_denoiser(
            "golddiff",
            small_data,
            sched,
            device="cpu",
            k_min=20,
            k_max=60,
            low_res=4,
            pool=pool,
            backend=backend,
        )
        x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
        outs[backend] = [
            den.denoise(x, t, generator=torch.Generator().manual_seed(2)) for t in (900, 300, 0)
        ]
    for a, b in zip(outs["torch"], outs["faiss"]):
        assert [set(r.tolist()) for r in a.subset] == [set(r.tolist()) for r in b.subset]
        torch.testing.assert_close(a.x0_hat, b.x0_hat, atol=1e-5, rtol=1e-5)
        assert a.search_recall is None and b.search_recall is None


def test_ivf_search_recall_is_recorded_only_when_the_index_is_used(small_data):
    sched = NoiseSchedule()
    den = make_denoiser(
        "golddiff",
        small_data,
        sched,
        device="cpu",
        k_min=20,
        k_max=60,
        low_res=4,
        pool="nearest",
        backend="faiss-ivf",
        nprobe=1,
    )
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    out = den.denoise(x, 500)
    assert out.search_recall is not None and out.search_recall.shape == (3,)
    # independent check: the share of the exact proxy top-60 (numpy brute force) present in the backend's result
    ix = den.corpus.proxy(4, "faiss-ivf", None)
    s = math.sqrt(sched.abar(500))
    expect = _np_topk(ix.query(x), ix.P, s, 60)
    cand = ix.search(ix.query(x), s, 60, None, 1)
    manual = [len(set(r.tolist()) & e) / 60 for r, e in zip(cand, expect)]
    np.testing.assert_allclose(out.search_recall.numpy(), manual, atol=1e-6)
    rec = make_record(0, 500, x, out, den.corpus, sched.abar(500))
    assert rec.search_recall.shape == (3,)
    random_pool = make_denoiser(
        "golddiff",
        small_data,
        sched,
        device="cpu",
        k_min=20,
        k_max=60,
        low_res=4,
        backend="faiss-ivf",
    )
    assert (
        random_pool.denoise(x, 500, torch.Generator().manual_seed(0)).search_recall is None
    )  # pool: exact path


def test_make_denoiser_rejects_bad_backend_settings(small_data):
    with pytest.raises(ValueError, match="torch, faiss, faiss-ivf"):
        make_denoiser("golddiff", small_data, device="cpu", backend="hnsw")
    with pytest.raises(ValueError, match="nlist"):
        make_denoiser("golddiff", small_data, device="cpu", backend="faiss-ivf", nlist=10_000)
    with pytest.raises(ValueError, match="nprobe=0 must be at least 1"):
        make_denoiser("hybrid", small_data, device="cpu", backend="faiss-ivf", nprobe=0)


def test_sample_recall_reports_the_screen_at_the_runs_own_states(capsys):
    # one sample whose screen searches all N (pool nearest) through a small IVF index: the recall
    # printed per step is the share of the exact proxy top-k_max that the index found
    from golddiff.cli import main

    argv = ["sample", "--dataset", "digits", "--steps", "3", "--n", "2", "--device", "cpu",
            "--backend", "faiss-ivf", "--pool", "nearest", "--nprobe", "1", "--recall"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("recall of the faiss-ivf screen")
    vals = [float(v) for v in re.findall(r"t=\d+ ([0-9.]+) \(", line)]
    assert len(vals) == 3 and all(0.0 < v <= 1.0 for v in vals)
    assert min(vals) < 1.0  # one list of sqrt(N) ~ 42 cannot hold the whole top-k_max
