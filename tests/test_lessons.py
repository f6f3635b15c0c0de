"""Unit tests of golddiff.lessons and golddiff.lesson_figures against closed forms and invariants."""

import math

import numpy as np
import pytest
import torch

import golddiff
from golddiff.explore import lesson_figures as figs
from golddiff.explore import gaussian, lessons
from golddiff.data import Dataset
from golddiff.denoise.corpus import get_corpus
from golddiff.core.schedule import NoiseSchedule

SCH = NoiseSchedule()


def gaussian_dataset(name="gauss-test", N=4000, seed=0) -> Dataset:
    """N samples of a correlated 4-D Gaussian stored as (N, 1, 2, 2) images."""
    g = np.random.default_rng(seed)
    A = np.array(
        [[0.5, 0.1, 0.0, 0.0], [0.2, 0.3, 0.0, 0.1], [0.0, 0.1, 0.2, 0.0], [0.1, 0.0, 0.05, 0.4]]
    )
    X = g.standard_normal((N, 4)) @ A.T + np.array([0.1, -0.2, 0.0, 0.3])
    return Dataset(
        name, torch.from_numpy(X.astype(np.float32)).reshape(N, 1, 2, 2), np.zeros(N, np.int64)
    )


# ----------------------------------------------------------------------------- Gaussian regime


def test_teleport_to_the_start_time_is_identity():
    ds = gaussian_dataset()
    st = get_corpus(ds, "cpu").stats
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    aT = SCH.abar(900)
    assert torch.allclose(st.teleport(x, aT, aT), x, atol=1e-5)
    path = gaussian.gaussian_path(ds, x, [900, 500, 0], device="cpu")
    assert np.allclose(path[0], x.numpy(), atol=1e-5)


def test_closed_form_trajectory_matches_many_step_ddim_with_wiener():
    ds = gaussian_dataset()
    fine = gaussian.gaussian_demo(ds, steps=1000, n=8, seed=3, device="cpu")
    coarse = gaussian.gaussian_demo(ds, steps=5, n=8, seed=3, device="cpu")
    err_fine = np.abs(fine["ddim_sample"] - fine["closed_sample"]).max()
    err_coarse = np.abs(coarse["ddim_sample"] - coarse["closed_sample"]).max()
    assert err_fine < 2e-2 and fine["r2"] > 0.999  # DDIM converges to the exact Gaussian PF-ODE
    assert err_fine < err_coarse  # and the discretization error shrinks with steps
    # intermediate states agree too: DDIM x_t at t = 500 vs the closed form at t = 500
    i = fine["ts"].index(500)
    assert np.abs(fine["ddim_x"][i] - fine["closed_x"][i]).max() < 2e-2


def test_gaussian_gap_is_one_at_pure_noise_and_bounded():
    ds = golddiff.load_dataset("digits")
    gap = gaussian.wiener_gap(ds, [999, 500, 0], n=8, seed=0, device="cpu")
    # at abar -> 0 both the Wiener and the exact posterior mean tend to the data mean
    assert gap["r2"][0] > 0.99
    assert gap["mse"][0] < gap["mse"][1]  # mid noise: the data is not Gaussian, the two means part
    assert np.all((gap["ppl_frac"] > 0) & (gap["ppl_frac"] <= 1 + 1e-6))
    assert (
        gap["ppl_frac"][0] > gap["ppl_frac"][1] > gap["ppl_frac"][2]
    )  # concentration as the noise drops


def test_teleport_to_the_first_step_changes_nothing():
    ds = golddiff.load_dataset("digits")
    params = dict(k_min=50, k_max=100, low_res=4, mask_threshold=0.02)
    out = gaussian.teleport_run(ds, params, steps=5, n=2, seed=0, t_skip=999, device="cpu")
    assert out["calls_full"] == out["calls_teleport"] == 5
    assert np.allclose(out["full"], out["teleported"], atol=1e-4) and out["r2"] > 0.9999
    assert out["seconds_saved"] == 0.0  # no call skipped, no saving reported
    skip = gaussian.teleport_run(ds, params, steps=5, n=2, seed=0, t_skip=500, device="cpu")
    assert skip["calls_teleport"] == 3  # 500, 250, 0
    assert 0 < skip["seconds_saved"] < skip["seconds_full"]  # two measured calls, not the total
    with pytest.raises(ValueError):
        gaussian.teleport_run(ds, params, steps=5, n=2, seed=0, t_skip=450, device="cpu")


# ----------------------------------------------------------------------------- 2-D toy


def test_toy_posterior_weights_are_a_hand_softmax():
    ds = golddiff.load_dataset("moons")
    X = ds.flat().double().numpy()
    x = np.array([[0.3, -0.4], [1.5, 1.0]])
    for t in (900, 300, 20):
        w = lessons.posterior_weights(ds, x, t)
        a = SCH.abar(t)
        logits = -((x[:, None, :] - math.sqrt(a) * X[None]) ** 2).sum(-1) / (2 * (1 - a))
        hand = np.exp(logits - logits.max(1, keepdims=True))
        hand /= hand.sum(1, keepdims=True)
        assert np.allclose(w.sum(1), 1.0, atol=1e-5)
        assert np.allclose(w, hand, atol=1e-5)


def test_toy_frame_is_consistent_with_its_trajectory():
    ds = golddiff.load_dataset("gmm")
    traj = lessons.toy_run(ds, (1.0, -1.0), steps=20, seed=0)
    assert traj.records[0].x_t.reshape(-1).tolist() == pytest.approx([1.0, -1.0])
    for step in (0, 10, 19):
        f = lessons.toy_frame(ds, traj, step)
        assert len(f["subset"]) == f["k_t"] and len(set(f["subset"].tolist())) == f["k_t"]
        assert f["x_path"].shape == (step + 1, 2) and f["x0_path"].shape == (step + 1, 2)
        assert math.isclose(f["weights"].sum(), 1.0, abs_tol=1e-5)
        w = f["weights"].astype(np.float64)
        H = -(w * np.log(np.maximum(w, 1e-300))).sum()
        assert math.isclose(H, f["entropy"], rel_tol=1e-3, abs_tol=1e-4)
    with pytest.raises(ValueError):
        lessons.toy_frame(ds, traj, 20)


def test_toy_golddiff_with_the_whole_set_equals_the_optimal_denoiser():
    ds = golddiff.load_dataset("moons")
    full = lessons.toy_run(ds, (0.7, 0.2), steps=10, k_min=ds.N, k_max=ds.N)
    opt = golddiff.sample(
        golddiff.make_denoiser("optimal", ds, device="cpu"),
        steps=10,
        n=1,
        x_T=torch.tensor([[0.7, 0.2]]),
    )
    assert np.allclose(full.samples, opt.samples, atol=1e-4)


def test_toy_run_rejects_images():
    with pytest.raises(ValueError):
        lessons.toy_run(golddiff.load_dataset("digits"), (0.0, 0.0))


# ----------------------------------------------------------------------------- Compare helpers


def test_nearest_train_finds_copies_and_measures_shifts():
    ds = golddiff.load_dataset("digits")
    idx = np.array([3, 100, 1500])
    found, dist = lessons.nearest_train(ds.images[idx].numpy(), ds)
    X = ds.flat()
    assert np.allclose(dist, 0.0, atol=1e-3)
    assert np.allclose(X[found].numpy(), X[idx].numpy())  # the copy itself (or an identical image)
    shifted = (X[idx[:1]] + 0.02).numpy()  # +0.02 in [-1, 1] units = 0.01 in [0, 1]
    _, d = lessons.nearest_train(shifted, ds)
    assert d[0] <= 0.01 + 1e-5


def test_train_nn_distance_by_hand():
    vals = torch.tensor([-1.0, -0.8, 0.0, 0.6, 0.9]).reshape(5, 1, 1, 1)
    ds = Dataset("nn-test", vals, np.zeros(5, np.int64))
    # neighbour gaps 0.2, 0.2, 0.6, 0.3, 0.3 in [-1, 1] units -> halved in [0, 1] units; median 0.15
    assert lessons.train_nn_distance(ds) == pytest.approx(0.15, abs=1e-6)


def test_onestep_curve_of_a_method_against_itself_is_perfect():
    ds = golddiff.load_dataset("digits")
    den = golddiff.make_denoiser("wiener", ds, device="cpu")
    ref = golddiff.sample(den, steps=5, n=3, seed=0)
    snr, r2s, mses = lessons.onestep_curve(den, ref)
    assert np.allclose(snr, ref.scalars("snr")) and np.all(np.diff(snr) > 0)
    assert np.allclose(r2s, 1.0, atol=1e-5) and np.allclose(mses, 0.0, atol=1e-8)


# ----------------------------------------------------------------------------- How it works


def test_gold_schedules_respect_their_bounds():
    s = lessons.gold_schedules(5000, 250, 500)
    assert np.all((250 <= s["k_t"]) & (s["k_t"] <= 500) & (s["m_t"] >= 500) & (s["m_t"] <= 5000))
    assert np.all(np.diff(s["k_t"]) >= 0) and np.all(
        np.diff(s["m_t"]) <= 0
    )  # t grows: subset grows, pool shrinks
    assert s["m_t"][0] > 4900 and s["k_t"][-1] >= 499  # clean: near N; noisy: near k_max


def test_mask_neighbourhood_threshold_zero_is_everything():
    ds = golddiff.load_dataset("digits")
    nb = lessons.mask_neighbourhood(ds, 500, 0.0, 3, 4, device="cpu")
    assert nb["size"] == ds.D and nb["mask"].shape == (8, 8) and nb["mask"].min() == 1
    assert nb["strength"].max() <= 1.0 + 1e-6
    nb2 = lessons.mask_neighbourhood(ds, 500, 0.5, 3, 4, device="cpu")
    assert nb2["size"] <= nb["size"]
    with pytest.raises(ValueError):
        lessons.mask_neighbourhood(ds, 500, 0.02, 8, 0, device="cpu")


def test_posterior_profile_limits():
    ds = golddiff.load_dataset("digits")
    p = lessons.posterior_profile(ds, 5, [0, 999], device="cpu")
    assert np.allclose(p["perplexity"], np.exp(p["entropy"]), rtol=1e-4)
    assert np.all(p["entropy"] <= math.log(ds.N) + 1e-4)
    assert p["w_true"][0] > 0.99 and p["k99"][0] == 1  # clean: the image itself
    assert p["entropy"][1] > 0.95 * math.log(ds.N)  # pure noise: nearly uniform
    assert np.allclose(p["sorted_w"].sum(1), 1.0, atol=1e-5) and np.all(
        np.diff(p["sorted_w"], axis=1) <= 0
    )


# ----------------------------------------------------------------------------- figures


def test_tile_geometry_and_range():
    x = np.linspace(-1, 1, 5 * 64, dtype=np.float32).reshape(5, 1, 8, 8)
    out = figs.tile(x, ncol=3, pad=2, px=16)  # each image enlarged 2x to 16x16
    assert out.shape == (2 * 16 + 2, 3 * 16 + 2 * 2) and out.dtype == np.uint8
    assert out[0, 0] == 0 and out[16 + 2 + 15, 16 + 2 + 15] == 255  # -1 -> black, +1 -> white
    assert (out[16:18, :] == 255).all()  # the white gap between rows
    rgb = figs.tile(np.zeros((2, 3, 4, 4), np.float32), px=4)
    assert rgb.shape == (4, 4 * 2 + 2, 3)  # default gap of 2 px


def test_figures_build():
    ds = golddiff.load_dataset("moons")
    traj = lessons.toy_run(ds, (0.5, 0.5), steps=8)
    f = lessons.toy_frame(ds, traj, 4)
    scene = figs.toy_scene(f)
    assert scene.data[0].name == "start grid"  # the page reads clicks on trace 0
    assert len(scene.data[1].x) == ds.N
    e = figs.concentration_vs_snr(
        traj.scalars("snr"),
        traj.series("entropy")[:, 0],
        traj.series("perplexity")[:, 0],
        ds.N,
        traj.scalars("k_t"),
        f["snr"],
    )
    assert {t.name for t in e.data} >= {"entropy H (nats)", "perplexity exp(H)"}
    t = figs.step_times({"pca": 10.0, "golddiff": 1.0}, {"pca": {}, "golddiff": {"screen": 0.5}})
    assert list(t.data[0].y) == ["pca", "golddiff"]
    c = figs.curves_vs_snr(
        {"a": (np.array([0.1, 1.0]), np.array([0.5, 0.9]))}, "y", "title", vlines={"switch": 0.1}
    )
    assert len(c.data) == 1
