"""The adaptive golden subset: importance weights, the error estimate, convergence to the
full scan, determinism, and the frontier."""

import math

import numpy as np
import pytest
import torch

from golddiff import DenoiserParams, NoiseSchedule, make_denoiser, sample
from golddiff.core.importance import draw, draws_needed, fold, half_error, proposal
from golddiff.core.summaries import r2
from golddiff.data import Dataset
from golddiff.denoise.adaptive import proxy_proposal
from golddiff.denoise.corpus import Corpus
from golddiff.explore.lessons import pixel_spread
from golddiff.run.frontier import format_frontier, frontier, pareto
from conftest import structured_ds as shared_structured_ds
from reference import locality_logits


def structured_ds(N=1200, H=8, seed=0) -> Dataset:
    return shared_structured_ds(N, H, seed, "adaptive")


def noisy(x0, abar, seed):
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps


# ----------------------------------------------------------------------------- importance weights


def test_importance_weights_are_unbiased_on_a_closed_form_posterior():
    """Toy per-pixel posterior: N = 5 images, D = 3 pixels, logits L (D, N) written out. With draws
    from a non-uniform q and the fold's offsets log c_i - log q_i, (1/k) sum exp(L + offset) x is
    unbiased for sum_i exp(L_i) x_i and (1/k) sum exp(L + offset) for sum_i exp(L_i)."""
    L = torch.tensor(
        [[0.0, -1.0, -2.0, 0.5, -0.5], [-3.0, 0.0, 1.0, -1.0, 0.0], [0.2, 0.1, 0.0, -0.1, -0.2]],
        dtype=torch.float64,
    )  # (D, N)
    X = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0], [3.0, 0.5, 1.0], [-2.0, 1.0, 0.0],
                      [0.5, 0.5, 0.5]], dtype=torch.float64)  # (N, D)
    num_exact = (L.exp() * X.T).sum(1)  # (D,)
    den_exact = L.exp().sum(1)
    q = torch.tensor([[0.4, 0.1, 0.3, 0.15, 0.05]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    k, reps = 8, 4000
    nums, dens, plain = [], [], []
    for _ in range(reps):
        d = draw(q.float(), k, g)[0]
        idx, off = fold(d, q[0])
        e = (L[:, idx] + off[None]).exp()  # (D, u)
        nums.append((e * X[idx].T).sum(1) / k)
        dens.append(e.sum(1) / k)
        plain.append((L[:, idx].exp() * X[idx].T).sum(1) / k * 5)  # no -log q: biased
    nums, dens, plain = torch.stack(nums), torch.stack(dens), torch.stack(plain)
    for est, exact in ((nums, num_exact), (dens, den_exact)):
        se = est.std(0) / math.sqrt(reps)
        assert torch.all((est.mean(0) - exact).abs() < 5 * se), (est.mean(0), exact)
    se = plain.std(0) / math.sqrt(reps)
    assert torch.any((plain.mean(0) - num_exact).abs() > 5 * se)  # the offsets matter
    # the self-normalised ratio is consistent: many draws give the exact per-pixel posterior mean
    d = draw(q.float(), 200_000, g)[0]
    idx, off = fold(d, q[0])
    w = torch.softmax(L[:, idx] + off[None], dim=1)
    exact = (torch.softmax(L, dim=1) * X.T).sum(1)
    assert torch.allclose((w * X[idx].T).sum(1), exact, atol=0.02)


def test_proposal_mixes_the_uniform_pool_and_draws_follow_it():
    g = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    q = proposal(g, temper=2.0, mix=0.3)
    want = 0.7 * torch.softmax(g / 2.0, 1) + 0.3 / 4
    assert torch.allclose(q, want) and torch.allclose(q.sum(1), torch.ones(1))
    d = draw(q, 100_000, torch.Generator().manual_seed(1))[0]
    freq = torch.bincount(d, minlength=4).float() / d.numel()
    assert torch.allclose(freq, q[0], atol=0.01)


def test_half_error_and_growth_rule():
    x = torch.randn(3, 50)
    assert torch.all(half_error(x, x, x) == 0)  # halves agree and no bias: no error
    a, b = x + 0.1, x - 0.1
    # ||a - b||^2 / 4 = D 0.01 and the halves' mean is x: err = 0.01 / var(x)
    assert torch.allclose(half_error(a, b, x), 0.01 / x.var(1, unbiased=False), rtol=1e-5)
    assert draws_needed(100, 0.02, 0.01, 10_000) >= 200  # err ~ 1 / n: twice the draws
    assert draws_needed(100, 0.005, 0.01, 10_000) == 100
    assert draws_needed(100, 1.0, 0.01, 500) == 500  # capped
    assert draws_needed(101, 0.02, 0.01, 10_000) % 2 == 0


@pytest.mark.parametrize("density", [0.02, 0.6])  # the sparse and the dense (image-major) path
def test_kernel_over_own_rows_with_offsets_equals_the_plain_softmax(density):
    """posterior(idx=..., offsets=...) against softmax_i(logit_i(m) + offset_i) written out."""
    from golddiff.core.logits import mask_operator
    from golddiff.core.posterior import posterior

    g = torch.Generator().manual_seed(0)
    N, D, abar = 300, 64, 0.3
    X, x = torch.randn(N, D, generator=g), torch.randn(1, D, generator=g)
    M = ((torch.rand(D, D, generator=g) < density).float() + torch.eye(D)).clamp_max(1)
    assert mask_operator(M, abar).sparse == (density < 0.1)
    rows = torch.randperm(N, generator=g)[:70]
    off = torch.randn(70, generator=g)
    acc = posterior(x, X, M, abar, idx=[rows], offsets=[off], weights=True)
    L = -(M[None] * (x[0, :, None] - abar**0.5 * X[rows][:, :, None]).square()).sum(1)
    w = torch.softmax((L / (2 * (1 - abar)) + off[:, None]).double(), 0)  # (70, D) over images
    assert torch.allclose(acc.mean()[0].double(), (w * X[rows].double()).sum(0), atol=1e-5)
    assert torch.allclose(acc.entropy()[0].double(), torch.special.entr(w).sum(0), atol=1e-4)
    assert torch.allclose(acc.image_w[0].double(), w.mean(1), atol=1e-6)


# ----------------------------------------------------------------------------- against the full scan


def _one_step(ds, t, tolerance, seed=0, k_max=None, n=6):
    """(adaptive output, full-scan x0) at one x_t of n noised training images."""
    sched = NoiseSchedule()
    abar = sched.abar(t)
    params = DenoiserParams(subset="adaptive", tolerance=tolerance, k_max=k_max)
    gd = make_denoiser("golddiff", ds, sched, device="cpu", params=params)
    ref = make_denoiser("pca", ds, sched, device="cpu")
    x0 = ds.flat()[torch.arange(n) * 7]
    x_t = noisy(x0, abar, seed)
    out = gd.denoise(x_t, t, torch.Generator().manual_seed(seed))
    return out, ref.denoise(x_t, t).x0_hat


def test_error_estimate_is_calibrated_against_the_exact_posterior():
    """Fixed draws (tolerance 1: no growth): the estimated 1 - r^2 against the actual 1 - r^2 of the
    exact full-scan PCA-locality posterior, averaged over samples and seeds, within a factor of 2."""
    ds = structured_ds()
    for t in (600, 300, 100):
        est, act = [], []
        for seed in range(3):
            out, ref = _one_step(ds, t, tolerance=1.0, seed=seed)
            est.append(out.error_est)
            act.append(1 - r2(out.x0_hat, ref))
        ratio = float(torch.cat(est).mean() / torch.cat(act).mean())
        assert 0.5 <= ratio <= 2.0, (t, ratio)


def test_tolerance_to_zero_converges_to_the_full_scan():
    ds = structured_ds(N=800)
    errs, ks = [], []
    for tol in (0.1, 0.01, 0.001):
        out, ref = _one_step(ds, 300, tol, k_max=ds.N)
        errs.append(float((1 - r2(out.x0_hat, ref)).mean()))
        ks.append(float(out.k_b.float().mean()))
    assert errs[0] > errs[1] > errs[2] and ks[0] < ks[1] < ks[2]
    assert errs[2] < 0.003


def test_adaptive_sampling_is_deterministic_per_seed_and_follows_the_posterior():
    ds = structured_ds(N=600)
    den = make_denoiser("golddiff", ds, device="cpu", subset="adaptive", tolerance=0.02)
    a = sample(den, steps=4, n=3, seed=5)
    b = sample(den, steps=4, n=3, seed=5)
    c = sample(den, steps=4, n=3, seed=6)
    assert np.array_equal(a.samples, b.samples)
    assert all(np.array_equal(r.k_b, s.k_b) for r, s in zip(a.records, b.records))
    assert not np.array_equal(a.samples, c.samples)
    rec = a.records[1]
    assert rec.k_b.shape == (3,) and rec.error_est.shape == (3,)
    assert rec.subset_idx.shape[0] == 3 and rec.captured_mass.shape == (3,)
    assert np.all(rec.captured_mass <= 1 + 1e-6)  # padded subsets count each image once


def test_k_b_counts_the_distinct_images_aggregated(monkeypatch):
    """k_b against the images the denoiser actually handed to the kernel: every subset that
    `Corpus.posterior` aggregated for sample b, over both halves and every round, united."""
    ds = structured_ds(N=600)
    den = make_denoiser("golddiff", ds, device="cpu", subset="adaptive", tolerance=0.005)
    seen = {}
    real = Corpus.posterior

    def spy(self, x_t, M, abar, tau=1.0, subset=None, offsets=None, **kw):
        acc = real(self, x_t, M, abar, tau, subset, offsets, **kw)
        for xb, idx in zip(x_t, subset):
            key = int(next(b for b in range(len(X_T)) if torch.equal(X_T[b], xb)))
            seen.setdefault(key, set()).update(idx.tolist())
        return acc

    monkeypatch.setattr(Corpus, "posterior", spy)
    abar = NoiseSchedule().abar(300)
    X_T = noisy(ds.flat()[:4], abar, 1)
    out = den.denoise(X_T, 300, torch.Generator().manual_seed(0))
    want = [len(seen[b]) for b in range(4)]
    assert out.k_b.tolist() == want
    assert max(want) > 256 // 2  # growth rounds ran (more than the first half's draws)
    for b in range(4):  # the subset lists exactly those images (padded by repeats)
        assert set(out.subset[b].tolist()) == seen[b]


def test_spread_map_uses_the_adaptive_denoisers_own_weights():
    """pixel_spread under subset="adaptive" against the plain formula with the record's subset and
    importance offsets; the same weights give the denoiser's own x0_hat, so they are its weights."""
    ds = structured_ds(N=600)
    den = make_denoiser("golddiff", ds, device="cpu", subset="adaptive", tolerance=0.02)
    traj = sample(den, steps=4, n=2, seed=3)
    X = ds.flat().double()
    for step in (1, 2):
        rec = traj.records[step]
        M = den.corpus.stats.mask(rec.t, rec.abar, den.params.mask_threshold, den.params.mask_rule)
        for b in range(2):
            off = torch.as_tensor(rec.subset_offset[b]).double()
            keep = torch.isfinite(off)
            idx = torch.as_tensor(rec.subset_idx[b])[keep]
            assert idx.unique().shape[0] == idx.shape[0] == int(rec.k_b[b])
            x = torch.as_tensor(rec.x_t[b].reshape(1, -1))
            L = locality_logits(x, X[idx].float(), M, rec.abar)[0].double()  # (k, D)
            w = torch.softmax(L + off[keep][:, None], 0)  # (k, D)
            mean = (w * X[idx]).sum(0)
            np.testing.assert_allclose(mean.numpy(), rec.x0_hat[b].reshape(-1), atol=1e-5)
            std = torch.sqrt(((w * X[idx].square()).sum(0) - mean.square()).clamp_min(0))
            got = pixel_spread(ds, traj, step, b, device="cpu").reshape(-1)
            np.testing.assert_allclose(got, std.numpy(), atol=1e-4)


def test_folded_duplicates_equal_one_column_per_draw():
    """fold's offsets log c_i - log q_i on the distinct images give the same self-normalised
    per-pixel estimate as one column per draw with offset -log q (duplicates repeated)."""
    g = torch.Generator().manual_seed(3)
    N, D = 20, 6
    L, X = torch.randn(D, N, dtype=torch.float64, generator=g), torch.randn(N, D, generator=g)
    q = torch.softmax(torch.randn(N, generator=g), 0).double()
    d = draw(q[None].float(), 60, g)[0]  # (60,) with duplicates
    idx, off = fold(d, q)
    assert idx.numel() < d.numel()
    folded = (torch.softmax(L[:, idx] + off[None], 1) * X[idx].T).sum(1)
    per_draw = (torch.softmax(L[:, d] - torch.log(q[d])[None], 1) * X[d].T).sum(1)
    assert torch.allclose(folded, per_draw, atol=1e-6)


def test_proxy_proposal_concentrates_on_the_nearest_image_at_low_noise():
    ds = structured_ds(N=300)
    den = make_denoiser("golddiff", ds, device="cpu", subset="adaptive")
    ix = den.corpus.proxy(den.params.low_res)
    abar = NoiseSchedule().abar(20)
    x_t = noisy(ds.flat()[:4], abar, 0)
    q = proxy_proposal(den.corpus, x_t, ix, 2, abar, temper=1.0)
    assert torch.equal(q.argmax(1), torch.arange(4))
    assert torch.all(q.min(1).values >= 0.3 / 300 - 1e-9)  # the uniform share bounds the weights


def test_subset_params_are_validated():
    ds = structured_ds(N=100)
    with pytest.raises(ValueError, match="subset mode"):
        make_denoiser("golddiff", ds, device="cpu", subset="fixed")
    with pytest.raises(ValueError, match="tolerance"):
        make_denoiser("golddiff", ds, device="cpu", subset="adaptive", tolerance=2.0)
    assert make_denoiser("golddiff", ds, device="cpu").params.subset == "schedule"


# ----------------------------------------------------------------------------- frontier


def test_pareto_front_keeps_only_undominated_points():
    pts = [
        {"label": "a", "speedup": 10, "final_r2": 0.99},
        {"label": "b", "speedup": 20, "final_r2": 0.95},
        {"label": "c", "speedup": 15, "final_r2": 0.94},  # beaten by b on both
        {"label": "d", "speedup": 5, "final_r2": 0.98},  # beaten by a on both
    ]
    assert [p["label"] for p in pareto(pts, "speedup", "final_r2")] == ["a", "b"]


def test_frontier_scores_every_mode_at_the_reference_states():
    from golddiff.explore.subset_figures import frontier_figure, k_per_sample

    ds = structured_ds(N=400)
    js = frontier(ds, (0.05,), (400, 100), steps=3, n=2, seeds=(0, 1), local_k_maxes=(400,))
    labels = [p["label"] for p in js["points"]]
    assert labels == ["schedule k 200/400", "schedule k 50/100", "adaptive tol 0.05",
                      "local k 400", "wiener", "optimal"]
    assert js["samples"] == 4 and len(js["t"]) == 3
    for p in js["points"]:
        assert p["final_r2_min"] <= p["final_r2"] <= 1 and p["cpu_total_speedup"] > 0
        assert all(w <= m <= 1 for m, w in zip(p["onestep_r2"], p["onestep_r2_worst"]))
        assert p["onestep_r2_min"] == min(p["onestep_r2"]) and len(p["k_per_step"]) == 3
    assert js["points"][1]["mean_k"] < js["points"][0]["mean_k"]
    assert "Pareto" in format_frontier(js)
    assert len(frontier_figure(js).data) == 5  # schedule, adaptive, local, closed form, front
    den = make_denoiser("golddiff", ds, device="cpu", subset="adaptive")
    traj = sample(den, steps=3, n=2, seed=0)
    assert len(k_per_sample(traj, 1).data) == 2
    assert k_per_sample(sample(make_denoiser("golddiff", ds, device="cpu"), steps=2, n=1)) is None


def test_a_configuration_equal_to_the_full_scan_scores_one_everywhere(monkeypatch):
    """The local subset with every image kept is the full scan itself, so the protocol must give
    it one-step and final r^2 of 1 (up to float round-off) at every step and sample."""
    from golddiff.denoise import local_subset as ls

    monkeypatch.setattr(ls, "POOL_PER_K", 1)
    monkeypatch.setattr(ls, "HEAD_PER_K", 1)
    monkeypatch.setattr(ls, "HEAD_PER_K_NO_TAIL", 1)
    monkeypatch.setattr(ls, "SHARP_SNR", math.inf)
    monkeypatch.setattr(ls, "POINT_SNR", math.inf)
    monkeypatch.setattr(ls, "FLAT_SNR", 0.0)
    monkeypatch.setattr(ls, "GAUSS_SNR", 0.0)
    ds = structured_ds(N=300)
    js = frontier(ds, (), (), steps=3, n=2, seeds=(4,), local_k_maxes=(300,), closed_form=False)
    (p,) = js["points"]
    assert min(p["onestep_r2_worst"]) > 1 - 1e-6 and p["final_r2_min"] > 1 - 1e-5


# ----------------------------------------------------------------------------- pages


def test_explorer_plots_k_t_per_sample_with_the_adaptive_subset():
    from test_app_explorer import explorer, ok, run

    at = explorer(steps=3)
    at.radio(key="subset").set_value("adaptive").run()
    charts = len(at.get("plotly_chart"))
    run(at)
    ok(at)
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("k_t per sample" in s for s in titles), charts


def test_compare_page_draws_the_frontier():
    from test_pages_teaching import open_page

    at = open_page("compare", steps=2)
    at.button(key="cmp_frontier_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Pareto front" in c.proto.spec for c in at.get("plotly_chart"))


def test_adaptive_sample_does_not_depend_on_its_batch():
    """Each sample draws from its own seed stream, so sample 0 of a batch of 3 equals sample 0 run
    alone (the property sharded runs rely on)."""
    ds = structured_ds(N=400)
    den = make_denoiser("golddiff", ds, device="cpu", subset="adaptive", tolerance=0.05)
    alone = sample(den, steps=4, n=1, seed=11)
    batch = sample(den, steps=4, n=3, seed=11)
    np.testing.assert_allclose(batch.samples[0], alone.samples[0], atol=1e-5)
    assert [int(r.k_b[0]) for r in batch.records] == [int(r.k_b[0]) for r in alone.records]
