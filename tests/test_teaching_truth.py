"""Issue 13: what the Explorer and the teaching pages show must match what they say. Figure
builders and the helpers behind them are tested directly (AppTest cannot click Plotly points);
expectations come from hand formulas and constructed records, never from stored outputs."""

import copy
import io
import math

import numpy as np
import pytest
import torch

import golddiff
from golddiff.core.schedule import NoiseSchedule
from golddiff.explore import figures, how_figures, lesson_figures, lessons, takeaway
from golddiff.explore.style import duration


@pytest.fixture(scope="module")
def digits():
    return golddiff.load_dataset("digits")


@pytest.fixture(scope="module")
def run(digits):
    den = golddiff.make_denoiser("golddiff", digits, device="cpu")
    return golddiff.sample(den, steps=5, n=2, seed=0)


def hand_global_weights(digits, x_t, abar):
    """The exact posterior over all N by the textbook formula, in float64."""
    X = digits.images.reshape(digits.N, -1).double().numpy()
    d2 = ((x_t[None].astype(np.float64) - math.sqrt(abar) * X) ** 2).sum(1)
    logit = -d2 / (2 * (1 - abar))
    w = np.exp(logit - logit.max())
    return w / w.sum()


def test_one_step_starts_from_pure_noise_and_is_not_the_noise(digits):
    """Finding 2: steps=1 denoises at t = 999, so the sample is an image, not x_T."""
    den = golddiff.make_denoiser("optimal", digits, device="cpu")
    tr = golddiff.sample(den, steps=1, n=2, seed=0)
    assert tr.records[0].t == NoiseSchedule().T - 1
    gap = np.abs(tr.samples - tr.x_T).mean()
    assert gap > 0.3 and np.abs(tr.samples).max() <= 1.0 + 1e-5  # in the image range, unlike noise


def test_gallery_shows_exact_global_weight_and_the_caption_says_which_ranks(run, digits):
    """Finding 3: each subset tile carries its exact global weight (checked against the hand
    formula) next to its local weight; the caption names the ranking and quotes true shares."""
    for step, rec in enumerate(run.records):
        for b in range(2):
            w = hand_global_weights(digits, rec.x_t[b].reshape(-1), rec.abar)
            idx = rec.ranked_idx[b]
            np.testing.assert_allclose(rec.ranked_global_w[b], w[idx], atol=1e-5)
    step = len(run.records) - 2
    text = figures.subset_caption(run, step, 0)
    assert "ranked by their mean local" in text and "global posterior" in text
    assert "almost all" not in text
    g = run.records[step].ranked_global_w[0][:16].sum()
    assert f"{g:.1%}" in text
    fig = figures.subset_gallery(run, step, 0, digits.images)
    notes = [a.text for a in fig.layout.annotations]
    assert len(notes) == 16 and all("local" in n and "global" in n for n in notes)


class FakeMap:
    coords = np.zeros((1797, 2))

    def locate(self, idx):
        return np.zeros((len(idx), 2))

    def transform(self, x):
        return np.zeros((len(x), 2))


def test_map_weight_colours_keep_one_scale_over_the_run(run):
    """Finding 3: the UMAP weight colour scale does not rescale per step."""
    scales = set()
    for step in range(len(run.records)):
        marker = figures.umap_figure(FakeMap(), run, step, 0).data[2].marker
        scales.add((marker.cmin, marker.cmax))
    assert len(scales) == 1
    ((lo, hi),) = scales
    assert lo == 0 and hi >= max(float(r.ranked_w[0].max()) for r in run.records)


def missed_run(run):
    """A copy of the run whose step 2 subset left out the posterior's top image, while the
    posterior is concentrated (perplexity 1.5) and W_S is small."""
    tr = copy.deepcopy(run)
    rec = tr.records[2]
    top = int(rec.top_idx[0][0])
    keep = [i for i in range(1797) if i != top][: rec.k_t]
    rec.subset_idx = rec.subset_idx.copy()
    rec.subset_idx[0] = keep
    rec.captured_mass = np.array([0.01, 0.99])
    rec.perplexity = np.array([1.5, 1.5])
    return tr


def test_a_subset_that_missed_the_posterior_is_shown_and_explained(run, digits):
    """Finding 4: the exact top images are shown with MISSED marks, and a callout says what
    happened and suggests pool auto; no callout where W_S is high."""
    tr = missed_run(run)
    fig = figures.global_top_gallery(tr, 2, 0, digits.images)
    notes = [a.text for a in fig.layout.annotations]
    assert "MISSED" in notes[0] and len(notes) == 8
    text = figures.miss_warning(tr, 2, 0)
    assert text and "auto" in text and "0.010" in text
    assert figures.miss_warning(tr, 2, 1) is None  # W_S 0.99 for sample 2
    assert figures.miss_warning(tr, 0, 0) is None  # the first step: flat posterior


def test_pixel_spread_matches_a_hand_formula_and_vanishes_where_images_agree(digits):
    """Finding 5: std[m] = sqrt(sum_i w_i(m) (x_i[m] - x0_hat[m])^2) over each pixel's own
    posterior, by hand from the mask; 0 on pixels every image shares."""
    den = golddiff.make_denoiser("pca", digits, device="cpu")
    tr = golddiff.sample(den, steps=5, n=1, seed=1)
    step = 3
    rec = tr.records[step]
    got = lessons.pixel_spread(digits, tr, step, 0, "cpu").reshape(-1)
    corpus = golddiff.get_corpus(digits, "cpu")
    p = den.params
    M = corpus.stats.mask(rec.t, rec.abar, p.mask_threshold, p.mask_rule).double().numpy()
    X = corpus.X.double().numpy()  # (N, D)
    x = rec.x_t[0].reshape(-1).astype(np.float64)
    r2 = (x[None] - math.sqrt(rec.abar) * X) ** 2  # (N, D)
    logit = -(r2 @ M) / (2 * (1 - rec.abar))  # (N, D): pixel m sums over n with M[n, m]
    w = np.exp(logit - logit.max(0))
    w /= w.sum(0)
    mean = (w * X).sum(0)
    np.testing.assert_allclose(mean, rec.x0_hat[0].reshape(-1), atol=1e-4)
    np.testing.assert_allclose(got, np.sqrt((w * (X - mean) ** 2).sum(0)), atol=2e-3)
    constant = np.ptp(X, axis=0) == 0
    assert constant.any() and np.all(got[constant] < 1e-3)


def test_clicking_a_curve_point_picks_its_step(run):
    """One screen: a click on an SNR chart moves the step to the nearest SNR."""
    snr = run.scalars("snr")
    assert figures.clicked_step(snr, [{"x": float(snr[3]) * 1.2, "y": 1.0}]) == 3
    assert figures.clicked_step(snr, []) is None


def test_run_download_is_the_cli_format_and_the_gif_has_one_frame_per_step(run, digits):
    back = golddiff.Trajectory.load(io.BytesIO(takeaway.run_bytes(run)))
    np.testing.assert_array_equal(back.samples, run.samples)
    assert [r.t for r in back.records] == [r.t for r in run.records]
    import imageio.v3 as iio

    frames = iio.imread(takeaway.run_gif(run, 1, digits.images.numpy()), index=None)
    assert frames.shape[0] == len(run.records)
    x_t = run.records[0].x_t[1, 0]  # the first tile of the first frame is x_t, upscaled 4x
    tile = frames[0, 14 : 14 + 32 : 4, :32:4, 0].astype(float)  # under the 14-pixel label band
    expected = np.clip(np.round((x_t + 1) * 127.5), 0, 255)
    assert np.abs(tile - expected).max() <= 2


def test_time_runs_one_way_and_log_ticks_are_powers_of_ten():
    """Finding 7 / 8: t axes put pure noise on the left; log axes use powers of ten; How it
    works reports k_0.99 like the Explorer; the sorted weights stay visible at t = 0."""
    N = 500
    s = lessons.gold_schedules(N, 25, 50)
    fig = how_figures.schedules(s, N, 500)
    assert fig.layout.xaxis.autorange == "reversed"
    prof = dict(
        t=np.array([0, 500]),
        entropy=np.array([0.0, 3.0]),
        perplexity=np.array([1.0, 20.0]),
        ess=np.array([1.0, 10.0]),
        k99=np.array([1, 60]),
        N=N,
    )
    fig = how_figures.profile(prof, 500)
    assert fig.layout.xaxis.autorange == "reversed"
    assert "k_0.99" in [tr.name for tr in fig.data]
    assert fig.layout.yaxis2.exponentformat == "power"
    w = np.zeros(N)
    w[0] = 1.0  # t = 0: one image holds everything, the rest underflow to 0
    fig = how_figures.sorted_weights(w, 0)
    lo = fig.layout.yaxis.range[0]
    assert min(fig.data[0].y) >= 10**lo  # every point lies inside the drawn range
    assert fig.layout.yaxis.exponentformat == "power" and fig.layout.xaxis.exponentformat == "power"
    r2 = lesson_figures.curves_vs_snr(
        {"a": (np.array([1e-4, 1]), np.array([1e-5, 1e-2]))}, "mse", "t", ylog=True
    )
    assert r2.layout.yaxis.exponentformat == "power" and r2.layout.xaxis.exponentformat == "power"


def test_compare_labels_times_with_units_and_a_title_that_fits():
    """Finding 9: 10,910.9 ms reads 10.9 s, not a clipped '10910.9 m'."""
    assert duration(10.9109) == "10.9 s" and duration(0.0123) == "12.3 ms"
    fig = lesson_figures.step_times({"pca": 10910.9, "wiener": 0.5}, {"pca": {}, "wiener": {}})
    assert list(fig.data[0].text) == ["10.9 s", "0.5 ms"]
    lo, hi = fig.layout.xaxis.range
    assert hi - math.log10(10910.9) >= 0.9  # room for the outside label
    nn = lesson_figures.nn_distances({"pca": np.array([0.1])}, 0.2)
    assert len(nn.layout.title.text) <= 45
