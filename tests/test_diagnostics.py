"""Diagnostics modes of `sample`: exact, estimated (head + uniform tail, with standard errors) and
none. Expectations: a tail covering all of the rest reproduces the exact summaries; the partition
sum estimate is unbiased against its closed form; the modes never change the samples."""

import math

import numpy as np
import pytest
import torch

from golddiff import load_dataset, make_denoiser, sample
from golddiff.data.datasets import Dataset
from golddiff.denoise.corpus import CORPORA, get_corpus
from golddiff.run import Trajectory
from golddiff.run.estimate import counts, draw_tail, estimate_sums, jackknife
from golddiff.run.records import (
    DIAGNOSTICS_LABELS,
    EXACT_MAX_N,
    diagnostics_label,
    resolve_diagnostics,
)

SUMMARIES = ("entropy", "perplexity", "ess", "k90", "k99", "captured_mass", "recall")


@pytest.fixture(autouse=True)
def _clean():
    CORPORA.clear()
    yield
    CORPORA.clear()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _run(den, mode, **kw):
    return sample(den, steps=4, n=2, seed=3, diagnostics=mode, **kw)


def test_tail_covering_everything_equals_exact(digits):
    den = make_denoiser("golddiff", digits, device="cpu")
    exact = _run(den, "exact")
    est = _run(den, "estimated", diagnostics_tail=digits.N, diagnostics_head=50)
    assert np.array_equal(exact.samples, est.samples)
    for a, b in zip(exact.records, est.records):
        assert a.diagnostics == "exact" and b.diagnostics == "estimated"
        for name in SUMMARIES:
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=2e-4, atol=1e-5)
            assert np.all(getattr(b, name + "_se") == 0)  # nothing left to sample
        np.testing.assert_allclose(b.ranked_global_w, a.ranked_global_w, rtol=1e-3, atol=1e-7)
        np.testing.assert_allclose(np.sort(b.top_w, 1), np.sort(a.top_w, 1), rtol=1e-3, atol=1e-7)


def test_modes_leave_the_samples_alone(digits):
    den = make_denoiser("golddiff", digits, device="cpu")
    exact, none = _run(den, "exact"), _run(den, "none")
    est = _run(den, "estimated", diagnostics_tail=64, diagnostics_head=50)
    assert np.array_equal(exact.samples, none.samples)  # bit for bit
    assert np.array_equal(exact.samples, est.samples)
    for r in none.records:
        assert r.diagnostics == "none"
        assert all(getattr(r, n) is None for n in SUMMARIES + ("top_idx", "top_w"))
        assert r.entropy_se is None
    assert none.meta["diagnostics"] == "none" and est.meta["diagnostics_tail"] == 64
    assert all(0 < r.tail.min() and r.tail.max() <= 64 for r in est.records)
    with pytest.raises(ValueError, match="diagnostics_head=-1"):
        _run(den, "estimated", diagnostics_head=-1)


def _line_corpus(N=4000, seed=0):
    """Images on one axis, x_i = a_i e_1, with closed-form logits at x_t = 0."""
    a = np.random.default_rng(seed).uniform(-1, 1, N)
    img = np.zeros((N, 1, 4, 4), np.float32)
    img[:, 0, 0, 0] = a
    return Dataset("line", torch.from_numpy(img), np.zeros(N, np.int64)), a


def test_partition_sum_estimate_is_unbiased():
    data, a = _line_corpus()
    corpus = get_corpus(data, "cpu")
    abar, tau = 0.8, 1.0
    # at x_t = 0: logit_i = -abar a_i^2 / (2 (1 - abar) tau) (the library's logits drop no
    # x_t-free term here, since ||x_t||^2 = 0)
    logZ = math.log(np.exp(-abar * a**2 / (2 * (1 - abar) * tau)).sum())
    x = torch.zeros(1, 16)
    head = [torch.arange(0, 200)]  # any fixed head: the estimate is unbiased given it
    ratios = []
    for seed in range(300):
        acc = estimate_sums(corpus, x, abar, tau, head, [np.random.default_rng(seed)], 100)[0]
        ratios.append(math.exp(float(acc.lse()[0, 0]) - logZ))  # Z_hat / Z
    r = np.array(ratios)
    se = r.std(ddof=1) / math.sqrt(len(r))
    assert se > 0 and abs(r.mean() - 1.0) < 4 * se


def test_jackknife_error_matches_the_spread_over_seeds(digits):
    """The reported standard error is of the size of the estimate's actual spread over tails."""
    den = make_denoiser("golddiff", digits, device="cpu")
    vals, ses = [], []
    x = torch.randn(1, digits.D, generator=torch.Generator().manual_seed(0))
    corpus = den.corpus
    abar = den.schedule.abar(500)
    out = den.denoise(x, 500)
    from golddiff.run.estimate import estimated_summaries

    for seed in range(40):
        s = estimated_summaries(corpus, x, abar, 1.0, 8, list(out.subset), out.subset, None,
                                [np.random.default_rng(seed)], 150)
        vals.append(float(s["entropy"][0]))
        ses.append(float(s["entropy_se"][0]))
    spread, mean_se = np.std(vals, ddof=1), np.mean(ses)
    assert 0.4 < mean_se / spread < 2.5


def test_a_head_holding_every_image_is_exact(digits):
    den = make_denoiser("golddiff", digits, device="cpu")
    exact, est = _run(den, "exact"), _run(den, "estimated", diagnostics_head=digits.N)
    for a, b in zip(exact.records, est.records):
        assert np.all(b.tail == 0) and np.all(b.perplexity_se == 0)
        np.testing.assert_allclose(b.perplexity, a.perplexity, rtol=2e-4)
        np.testing.assert_array_equal(b.k99, a.k99)


def test_tail_draws_avoid_the_head_and_are_uniform():
    head = torch.tensor([0, 3, 4, 9])
    hits = np.zeros(20)
    for seed in range(2000):
        t = draw_tail(20, head, 4, np.random.default_rng(seed))
        assert t.shape == (4,) and len(set(t.tolist())) == 4
        assert not set(t.tolist()) & set(head.tolist())
        hits[t.numpy()] += 1
    rest = np.setdiff1d(np.arange(20), head.numpy())
    p = hits[rest] / 2000  # inclusion probability m / R = 4 / 16 each
    assert np.all(np.abs(p - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 2000))
    assert draw_tail(5, torch.arange(5), 3, np.random.default_rng(0)).numel() == 0


def test_counts_and_jackknife_closed_forms():
    c = counts(2, 6, 30, 3)  # groups of the tail: positions 0,3 / 1,4 / 2,5
    assert c.shape == (4, 8) and np.all(c[:, :2] == 1) and np.all(c[0, 2:] == 5)
    assert np.array_equal(c[1, 2:] == 0, [True, False, False, True, False, False])
    assert np.allclose(c[1:, 2:].sum(1), 30.0)
    est, se = jackknife(torch.tensor([1.0, 0.0, 2.0]), 0.5)  # G = 2: (1/2) * 0.5 * 2 = 0.5
    assert est == 1.0 and se == pytest.approx(math.sqrt(0.5))
    assert jackknife(torch.tensor([1.0, 0.0, 2.0]), 0.0) == (1.0, 0.0)


def test_auto_mode_and_labels():
    assert resolve_diagnostics("auto", "golddiff", EXACT_MAX_N) == "exact"
    assert resolve_diagnostics(None, "golddiff", EXACT_MAX_N + 1) == "estimated"
    assert resolve_diagnostics("auto", "pca", 10 * EXACT_MAX_N) == "exact"
    assert resolve_diagnostics("auto", "golddiff", 10 * EXACT_MAX_N, sharded=True) == "exact"
    with pytest.raises(ValueError, match="not one of"):
        resolve_diagnostics("rough", "golddiff", 10)
    with pytest.raises(ValueError, match="shard corpus"):
        resolve_diagnostics("estimated", "golddiff", 10, sharded=True)
    assert set(DIAGNOSTICS_LABELS) == {"exact", "estimated", "none"}
    assert diagnostics_label("none") == DIAGNOSTICS_LABELS["none"]


def test_saved_trajectory_keeps_the_mode(digits, tmp_path):
    den = make_denoiser("golddiff", digits, device="cpu")
    traj = _run(den, "estimated", diagnostics_tail=100, diagnostics_head=20)
    traj.save(tmp_path / "t.npz")
    back = Trajectory.load(tmp_path / "t.npz")
    assert back.meta["diagnostics"] == "estimated"
    assert diagnostics_label(back) == DIAGNOSTICS_LABELS["estimated"]
    r0, b0 = traj.records[1], back.records[1]
    assert b0.diagnostics == "estimated"
    np.testing.assert_array_equal(b0.ess_se, r0.ess_se)
    np.testing.assert_array_equal(b0.tail, r0.tail)


def test_ordered_sample_stream_is_distinct_and_uniform():
    from golddiff.run.estimate import ordered_sample

    N, n, reps = 200, 10, 4000  # 4 n < N: the stream of iid draws
    first, hits = np.zeros(N), np.zeros(N)
    for seed in range(reps):
        s = ordered_sample(N, n, np.random.default_rng(seed))
        assert s.shape == (n,) and len(set(s.tolist())) == n and s.min() >= 0 and s.max() < N
        first[s[0]] += 1
        hits[s] += 1
    # inclusion n / N and first place 1 / N for every value, within 5 binomial sd
    assert np.all(np.abs(hits / reps - n / N) < 5 * math.sqrt(n / N * (1 - n / N) / reps))
    assert np.all(np.abs(first / reps - 1 / N) < 5 * math.sqrt(1 / N / reps) + 1e-9)
