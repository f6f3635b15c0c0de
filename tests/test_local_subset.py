"""The per-neighbourhood golden subset (subset="local"): the head is each patch's nearest images,
the tail weights are the uniform inclusion odds, and a head of all N is the full scan exactly."""

import itertools
import math

import numpy as np
import torch

from golddiff import DenoiserParams, NoiseSchedule, make_denoiser, sample
from golddiff.core.summaries import r2
from golddiff.data import Dataset
from golddiff.denoise import local_subset as ls

from conftest import structured_ds as shared_structured_ds


def structured_ds(N=600, H=8, seed=0) -> Dataset:
    return shared_structured_ds(N, H, seed, "local")


def test_patches_cover_every_proxy_pixel_once():
    for C, side, parts in ((1, 14, 2), (3, 7, 2), (1, 5, 3)):
        flat = torch.cat(ls.patch_slices(C, side, parts)).sort().values
        assert torch.equal(flat, torch.arange(C * side * side))


def test_pool_holds_each_patch_top_r_by_the_plain_distance():
    g = torch.Generator().manual_seed(0)
    N, side, r, scale = 300, 6, 7, 0.6
    P = torch.randn(N, side * side, generator=g)
    q = torch.randn(2, side * side, generator=g)
    heads = ls.patch_pool(q, P, scale, ls.patch_slices(1, side, 2), r)
    grid = np.arange(side * side).reshape(side, side)
    for b in range(2):
        want = set()
        for a0, b0 in itertools.product((0, 3), (0, 3)):
            cols = grid[a0 : a0 + 3, b0 : b0 + 3].ravel()
            d = ((q[b, cols][None].numpy() - scale * P[:, cols].numpy()) ** 2).sum(1)
            want |= set(np.argsort(d)[:r].tolist())
        assert set(heads[b].tolist()) == want


def test_tail_is_uniform_on_the_complement_with_the_inclusion_log_weight():
    N, m = 50, 10
    head = torch.tensor([1, 4, 9, 30])
    counts = torch.zeros(N)
    g = torch.Generator().manual_seed(1)
    for _ in range(4000):
        tail, w = ls.uniform_tail(N, head, m, g)
        assert tail.unique().shape[0] == m and not bool(torch.isin(tail, head).any())
        counts[tail] += 1
    assert math.isclose(w, math.log((N - head.shape[0]) / m))
    freq = counts / 4000  # inclusion probability m / (N - |head|) = 10 / 46 off the head
    assert float(freq[head].sum()) == 0.0
    rest = torch.ones(N, dtype=torch.bool)
    rest[head] = False
    assert float((freq[rest] - m / 46).abs().max()) < 0.04


def test_head_of_all_images_equals_the_full_scan(monkeypatch):
    """r1, r2 >= N: every patch and anchor keeps all N, the tail is empty and the step is the
    exact full scan."""
    ds = structured_ds()
    monkeypatch.setattr(ls, "POOL_PER_K", 1)
    monkeypatch.setattr(ls, "HEAD_PER_K", 1)
    monkeypatch.setattr(ls, "HEAD_PER_K_NO_TAIL", 1)
    monkeypatch.setattr(ls, "SHARP_SNR", math.inf)
    monkeypatch.setattr(ls, "POINT_SNR", math.inf)
    monkeypatch.setattr(ls, "FLAT_SNR", 0.0)
    monkeypatch.setattr(ls, "GAUSS_SNR", 0.0)
    sched = NoiseSchedule()
    loc = make_denoiser("golddiff", ds, sched, device="cpu", subset="local", k_max=ds.N, low_res=4)
    ref = make_denoiser("pca", ds, sched, device="cpu")
    for t in (800, 300, 50):
        abar = sched.abar(t)
        eps = torch.randn(4, ds.D, generator=torch.Generator().manual_seed(t))
        x_t = math.sqrt(abar) * ds.flat()[:4] + math.sqrt(1 - abar) * eps
        out = loc.denoise(x_t, t, torch.Generator().manual_seed(0))
        assert out.k_t == ds.N
        torch.testing.assert_close(out.x0_hat, ref.denoise(x_t, t).x0_hat, atol=2e-5, rtol=1e-4)


def test_local_sampling_is_deterministic_per_seed_and_records_its_sizes():
    ds = structured_ds()
    params = DenoiserParams(subset="local", k_max=200, low_res=4)
    den = make_denoiser("golddiff", ds, device="cpu", params=params)
    a = sample(den, steps=4, n=3, seed=5)
    b = sample(den, steps=4, n=3, seed=5)
    np.testing.assert_array_equal(a.samples, b.samples)
    anchors = ls.anchor_pixels(ds.shape).shape[0]
    for rec in a.records:
        if rec.snr < ls.GAUSS_SNR:  # the closed form: no subset
            assert rec.method == "wiener" and rec.k_b is None
            continue
        if rec.snr < ls.FLAT_SNR:  # a uniform sample, no screen
            assert list(rec.k_b) == [200 // ls.FLAT_PER_K] * 3 == [rec.m_t] * 3
            continue
        plan = ls.local_plan(200, ds.N, rec.snr)
        cap = plan.patches**2 * plan.per_patch  # the pool holds at most this many
        assert 0 < rec.m_t <= cap
        if plan.per_anchor is None:  # sharp: the pool is the subset
            assert all(0 < k <= cap for k in rec.k_b)
            continue
        head = min(cap, anchors * plan.per_anchor)
        assert all(plan.tail <= k <= head + plan.tail for k in rec.k_b)
    ref = sample(make_denoiser("pca", ds, device="cpu"), steps=4, n=3, seed=5)
    flat = [torch.from_numpy(tr.samples.reshape(3, -1)) for tr in (a, ref)]
    fid = r2(*flat)
    assert bool(torch.isfinite(fid).all())


def test_gaussian_regime_is_the_wiener_step_and_high_snr_has_no_tail():
    ds = structured_ds()
    sched = NoiseSchedule()
    loc = make_denoiser("golddiff", ds, sched, device="cpu", subset="local", k_max=200, low_res=4)
    wie = make_denoiser("wiener", ds, sched, device="cpu")
    x = torch.randn(3, ds.D, generator=torch.Generator().manual_seed(1))
    t = next(t for t in range(999, 0, -1) if sched.snr(t) >= ls.GAUSS_SNR) + 1  # SNR just below
    out = loc.denoise(x, t, torch.Generator().manual_seed(0))
    assert out.method == "wiener" and out.subset is None
    torch.testing.assert_close(out.x0_hat, wie.denoise(x, t).x0_hat)
    t = next(t for t in range(1000) if sched.snr(t) < ls.TAIL_SNR) - 1  # SNR at least TAIL_SNR
    rows, offs, _, heads, _ = ls.local_subset(
        loc, x, sched.abar(t), loc.mask(t, sched.abar(t)), [torch.Generator()] * 3)
    assert [int(r.shape[0]) for r in rows] == heads and all(bool((o == 0).all()) for o in offs)


def test_head_holds_each_anchor_top_r_by_its_masked_distance():
    """The head is the union over anchor pixels of the r2 candidates nearest in that pixel's own
    masked distance, sum_n M[n, a] (x_n - s y_n)^2, computed here directly in numpy."""
    ds = structured_ds(N=200)
    den = make_denoiser("golddiff", ds, device="cpu", subset="local", low_res=4)
    t, scale = 300, 0.7
    M = den.mask(t, scale**2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(ds.D, generator=g)
    pool = torch.randperm(ds.N, generator=g)[:80].sort().values
    anchors = ls.anchor_pixels(ds.shape)
    head = ls.anchor_head(den.corpus, x, scale, pool, M[:, anchors], 6)
    X, Mn = ds.flat().numpy()[pool.numpy()], M.numpy()
    want = set()
    for a in anchors.tolist():
        d = (((x.numpy()[None] - scale * X) ** 2) * Mn[:, a][None]).sum(1)
        want |= set(pool.numpy()[np.argsort(d, kind="stable")[:6]].tolist())
    assert set(head.tolist()) == want


def test_ties_go_to_the_lowest_index_whatever_the_order():
    v = torch.tensor([[3.0, 1.0, 2.0, 1.0, 1.0, 0.5]])
    assert ls.smallest_r(v, 3).tolist() == [[1, 3, 5]]  # 0.5, then the first two 1.0s
    assert ls.smallest_r(v, 0).shape == (1, 0)


def test_smallest_r_is_the_stable_sort_prefix_with_and_without_ties():
    """Both paths (distinct values: topk's own set; ties across the r-th value: the lowest
    columns) give the first r columns of a stable sort, in column order."""
    g = torch.Generator().manual_seed(2)
    for v in (torch.randn(5, 300, generator=g), torch.randint(0, 6, (5, 300), generator=g).float()):
        for r in (1, 7, 40, 300):
            want = np.sort(np.argsort(v.numpy(), axis=1, kind="stable")[:, :r], axis=1)
            assert ls.smallest_r(v, r).tolist() == want.tolist()


def test_anchors_cover_the_grid_every_stride_pixels_in_every_channel():
    a = ls.anchor_pixels((3, 8, 8), stride=4)
    assert a.tolist() == [c * 64 + r * 8 + k for c in range(3) for r in (2, 6) for k in (2, 6)]
    assert ls.anchor_pixels((1, 2, 2), stride=8).tolist() == [3]  # at least one per side


def test_sharp_regime_subset_is_each_patch_nearest_by_the_plain_proxy_distance():
    """From SHARP_SNR the subset is the pool itself: the union over the SHARP_PATCHES^2 patches of
    the r1 images nearest on that patch in the proxy space, with no tail; recomputed here in numpy
    from the proxies."""
    ds = structured_ds()
    sched = NoiseSchedule()
    loc = make_denoiser("golddiff", ds, sched, device="cpu", subset="local", k_max=200, low_res=4)
    for lo, hi in ((ls.SHARP_SNR, ls.POINT_SNR), (ls.POINT_SNR, math.inf)):
        t = next(t for t in range(999, -1, -1) if lo <= sched.snr(t) < hi)
        abar, scale = sched.abar(t), math.sqrt(sched.abar(t))
        plan = ls.local_plan(200, ds.N, sched.snr(t))
        assert plan.per_anchor is None and plan.tail == 0 and plan.patches == ls.SHARP_PATCHES
        x = torch.randn(2, ds.D, generator=torch.Generator().manual_seed(t))
        rows, offs, pools, heads, _ = ls.local_subset(
            loc, x, abar, loc.mask(t, abar), [torch.Generator()] * 2)
        index = loc.corpus.proxy(4, "torch", None)
        P, q = index.P.numpy(), index.query(x).numpy()
        edges = [round(j * 4 / plan.patches) for j in range(plan.patches + 1)]
        grid = np.arange(16).reshape(4, 4)
        for b in range(2):
            want = set()
            for i, j in itertools.product(range(plan.patches), repeat=2):
                cols = grid[edges[i] : edges[i + 1], edges[j] : edges[j + 1]].ravel()
                d = ((q[b, cols][None] - scale * P[:, cols]) ** 2).sum(1)
                want |= set(np.argsort(d, kind="stable")[: plan.per_patch].tolist())
            assert set(rows[b].tolist()) == want and pools[b] == heads[b] == len(want)
            assert bool((offs[b] == 0).all())


def _state_at(sched, lo, hi):
    """A timestep whose SNR lies in [lo, hi)."""
    return next(t for t in range(999, -1, -1) if lo <= sched.snr(t) < hi)


def test_carried_images_join_the_head_and_leave_the_tail():
    """Joining a carry to a screened step: the head becomes the screened head plus the carried
    images (weight 0 offsets), none of them is drawn into the tail, and c_b counts the carried
    images the screen had not found. Flat and last (point) steps take no carry."""
    ds = structured_ds()
    sched = NoiseSchedule()
    loc = make_denoiser("golddiff", ds, sched, device="cpu", subset="local", k_max=200, low_res=4)
    x = torch.randn(2, ds.D, generator=torch.Generator().manual_seed(2))
    carry = [torch.tensor([0, 5, 77, 598]), torch.tensor([3, 3, 400])]
    for lo, hi in ((ls.FLAT_SNR, ls.TAIL_SNR), (ls.TAIL_SNR, ls.SHARP_SNR),
                   (ls.SHARP_SNR, ls.POINT_SNR)):
        t = _state_at(sched, lo, hi)
        abar, M = sched.abar(t), loc.mask(t, sched.abar(t))
        gens = [torch.Generator().manual_seed(9), torch.Generator().manual_seed(10)]
        bare = ls.local_subset(loc, x, abar, M, gens)
        gens = [torch.Generator().manual_seed(9), torch.Generator().manual_seed(10)]
        got = ls.local_subset(loc, x, abar, M, gens, carry)
        assert ls.takes_carry(sched.snr(t))
        for b in range(2):
            old = set(bare.rows[b][: bare.heads[b]].tolist())
            head = got.rows[b][: got.heads[b]].tolist()
            assert set(head) == old | set(carry[b].tolist()) and len(head) == len(set(head))
            assert got.carried[b] == len(set(carry[b].tolist()) - old)
            assert bool((got.offsets[b][: got.heads[b]] == 0).all())
            assert not set(got.rows[b][got.heads[b] :].tolist()) & set(head)
    for lo, hi in ((ls.GAUSS_SNR, ls.FLAT_SNR), (ls.POINT_SNR, math.inf)):
        t = _state_at(sched, lo, hi)
        assert not ls.takes_carry(sched.snr(t))
        abar, M = sched.abar(t), loc.mask(t, sched.abar(t))
        a = ls.local_subset(loc, x, abar, M, [torch.Generator().manual_seed(4)] * 2)
        b = ls.local_subset(loc, x, abar, M, [torch.Generator().manual_seed(4)] * 2, carry)
        assert all(torch.equal(u, v) for u, v in zip(a.rows, b.rows)) and b.carried == [0, 0]


def test_carry_is_the_images_whose_mean_pixel_weight_reaches_the_threshold():
    """What a step hands on is exactly the subset images whose per-pixel softmax weight,
    averaged over pixels, is at least CARRY_WEIGHT: recomputed here in float64 numpy from the
    masked distances and the tail's log weights."""
    ds = structured_ds()
    sched = NoiseSchedule()
    loc = make_denoiser("golddiff", ds, sched, device="cpu", subset="local", k_max=200, low_res=4)
    X = ds.flat().double().numpy()
    for lo, hi in ((ls.FLAT_SNR, ls.TAIL_SNR), (ls.SHARP_SNR, ls.POINT_SNR)):
        t = _state_at(sched, lo, hi)
        abar = sched.abar(t)
        x = math.sqrt(abar) * ds.flat()[:2] + math.sqrt(1 - abar) * torch.randn(
            2, ds.D, generator=torch.Generator().manual_seed(t))
        out = loc.denoise(x, t, torch.Generator().manual_seed(1))
        M = loc.mask(t, abar).double().numpy()
        for b in range(2):
            k = int(out.k_b[b])
            rows = out.subset[b, :k].numpy()
            d = (x[b].double().numpy()[None] - math.sqrt(abar) * X[rows]) ** 2  # (k, D)
            logit = -(d @ M) / (2 * (1 - abar)) + out.subset_offset[b, :k].double().numpy()[:, None]
            w = np.exp(logit - logit.max(0))
            w /= w.sum(0)  # (k, D) each pixel's softmax over the rows
            want = set(rows[w.mean(1) >= ls.CARRY_WEIGHT].tolist())
            close = np.abs(w.mean(1) - ls.CARRY_WEIGHT) < 1e-6  # float32 may round either way
            got = set(out.carry[b].tolist())
            assert got ^ want <= set(rows[close].tolist()) and got
    t = _state_at(sched, ls.GAUSS_SNR, ls.FLAT_SNR)
    assert loc.denoise(x, t, torch.Generator().manual_seed(1)).carry is None  # a uniform draw


def test_one_step_protocol_on_its_own_trajectory_repeats_it():
    """Fed the states of its own run with the run's streams, the local subset gives back that
    run's x0_hat at every step: the one-step protocol hands the carry on as the sampler does."""
    from golddiff.run.bench import onestep_samples
    from golddiff.denoise.streams import SampleStreams

    ds = structured_ds()
    loc = make_denoiser("golddiff", ds, device="cpu", subset="local", k_max=200, low_res=4)
    traj = sample(loc, steps=8, n=3, seed=4, diagnostics="none")
    assert any(r.c_b is not None and int(r.c_b.sum()) > 0 for r in traj.records)
    mse, _ = onestep_samples(loc, traj, SampleStreams(4, range(3)))
    assert float(mse.max()) == 0.0
