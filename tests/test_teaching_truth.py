"""What the Explorer and the teaching pages show must match what they say. Figure
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
from golddiff.explore import figures, galleries, how_figures, lesson_figures, lessons, takeaway
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
    """With steps=1 the sampler denoises at t = 999, so the sample is an image, not x_T."""
    den = golddiff.make_denoiser("optimal", digits, device="cpu")
    tr = golddiff.sample(den, steps=1, n=2, seed=0)
    assert tr.records[0].t == NoiseSchedule().T - 1
    gap = np.abs(tr.samples - tr.x_T).mean()
    assert gap > 0.3 and np.abs(tr.samples).max() <= 1.0 + 1e-5  # in the image range, unlike noise


def test_subset_gallery_ranks_s_t_by_the_exact_global_weight(run, digits):
    """The golden-subset gallery leads with the images of S_t that the exact posterior weighs
    most (hand formula over all N, float64), and its caption quotes the shares they hold."""
    for step, rec in enumerate(run.records):
        for b in range(2):
            w = hand_global_weights(digits, rec.x_t[b].reshape(-1), rec.abar)
            idx, got = lessons.subset_by_weight(digits, run, step, b, "cpu")
            assert sorted(idx.tolist()) == sorted(set(rec.subset_idx[b].tolist()))
            np.testing.assert_allclose(got, w[idx], atol=1e-5)
            assert int(idx[0]) == int(np.asarray(rec.subset_idx[b])[np.argmax(w[rec.subset_idx[b]])])
    step = len(run.records) - 2
    idx, w = lessons.subset_by_weight(digits, run, step, 0, "cpu")
    text = galleries.subset_caption(run.records[step], 0, w)
    assert "ranked by their exact global weight" in text
    assert f"{w[:16].sum():.1%}" in text and f"{run.records[step].captured_mass[0]:.3f}" in text
    share = {int(idx[0]): 0.25}
    fig = galleries.subset_gallery(idx, w, digits.images, share)
    notes = [a.text for a in fig.layout.annotations]
    assert len(notes) == 16 and notes[0].endswith("pixels 25.0%") and "pixels 0.0%" in notes[1]


class FakeMap:
    coords = np.zeros((1797, 2))
    n = 1797

    def locate(self, idx):
        return np.zeros((len(idx), 2))

    def transform(self, x):
        return np.zeros((len(x), 2))


def test_map_marks_the_exact_posteriors_top_image_on_one_colour_scale(run):
    """The map stars the exact posterior's top image, colours its heaviest images on one scale
    for the whole run, and its caption says what the dots are at this step."""
    scales = set()
    for step, rec in enumerate(run.records):
        fig = figures.umap_figure(FakeMap(), run, step, 0)
        top = next(t for t in fig.data if t.name.startswith("exact posterior's top images"))
        star = next(t for t in fig.data if t.name.startswith("exact posterior's top image "))
        assert int(top.customdata[0][0]) == int(rec.top_idx[0][0]) and star.marker.symbol == "star"
        assert len(top.x) == galleries.top_count(rec, 0, rec.top_idx.shape[1])
        scales.add((top.marker.cmin, top.marker.cmax))
        text = figures.map_caption(FakeMap(), run, step, 0)
        assert "narrows" not in text and f"{rec.top_w[0][0]:.2g}" in text
        assert ("flat" in text) == (rec.perplexity[0] > rec.N / 2)
    ((lo, hi),) = scales
    assert lo == 0 and hi == pytest.approx(max(float(r.top_w[0].max()) for r in run.records))


def missed_run(run):
    """A copy of the run whose step 2 subset left out the posterior's top image, while the
    posterior is concentrated (perplexity 1.5, three images hold 99% of it) and W_S is small."""
    tr = copy.deepcopy(run)
    rec = tr.records[2]
    top = int(rec.top_idx[0][0])
    keep = [i for i in range(1797) if i != top][: rec.k_t]
    rec.subset_idx = rec.subset_idx.copy()
    rec.subset_idx[0] = keep
    rec.captured_mass = np.array([0.01, 0.99])
    rec.perplexity = np.array([1.5, 1.5])
    rec.top_w = rec.top_w.copy()
    rec.top_w[0, :4] = [0.7, 0.25, 0.045, 0.5 / rec.k_t]  # the 4th is below 1 / k_t
    rec.k99 = np.array([4, 4])
    return tr


def test_missed_marks_only_images_whose_weight_matters(run, digits):
    """MISSED marks an image outside S_t only while the posterior is narrower than k_t and only
    when it holds more than 1 / k_t of the weight; images of weight ~0 are not shown as top; a
    callout explains a miss and suggests pool auto."""
    tr = missed_run(run)
    rec = tr.records[2]
    held = set(rec.subset_idx[0].tolist())
    marks = galleries.top_marks(rec, 0)
    assert len(marks) == 4  # k_0.99 = 4 images are shown, not 8
    for i, w, m in zip(rec.top_idx[0], rec.top_w[0], marks):
        assert m == ("in S_t" if int(i) in held else "MISSED" if w > 1 / rec.k_t else "")
    assert marks[0] == "MISSED" and marks[3] != "MISSED"
    notes = [a.text for a in galleries.global_top_gallery(tr, 2, 0, digits.images).layout.annotations]
    assert len(notes) == 4 and "MISSED" in notes[0]
    text = galleries.miss_warning(tr, 2, 0)
    assert text and "auto" in text and "0.010" in text
    assert galleries.miss_warning(tr, 2, 1) is None  # W_S 0.99 for sample 2
    wide = copy.deepcopy(tr)
    wide.records[2].perplexity = np.array([rec.k_t + 1.0] * 2)  # wider than S_t can hold
    assert "MISSED" not in galleries.top_marks(wide.records[2], 0)
    assert galleries.miss_warning(wide, 2, 0) is None
    assert "No image is marked as missed" in galleries.top_caption(wide, 2, 0)


def test_pixel_sources_are_the_argmax_of_each_pixels_own_posterior(digits):
    """Pixel m's source is argmax_i w_i(m) of the per-pixel posterior (hand formula from the mask,
    float64) and top_w its weight; an image holds a pixel when that weight passes 1/2, and the
    shares count those pixels. Under optimal every pixel has the global posterior's top image."""
    den = golddiff.make_denoiser("golddiff", digits, device="cpu")
    tr = golddiff.sample(den, steps=5, n=1, seed=2)
    corpus = golddiff.get_corpus(digits, "cpu")
    p = den.params
    X = corpus.X.double().numpy()
    for step in (2, 4):
        rec = tr.records[step]
        got = lessons.pixel_sources(digits, tr, step, 0, "cpu")
        S = np.asarray(rec.subset_idx[0])
        M = corpus.stats.mask(rec.t, rec.abar, p.mask_threshold, p.mask_rule).double().numpy()
        x = rec.x_t[0].reshape(-1).astype(np.float64)
        logit = -(((x[None] - math.sqrt(rec.abar) * X[S]) ** 2) @ M) / (2 * (1 - rec.abar))
        w = np.exp(logit - logit.max(0))
        w /= w.sum(0)  # (k, D)
        top = w.max(0)
        np.testing.assert_allclose(got.top_w.reshape(-1), top, atol=1e-4)
        clear = top - np.sort(w, 0)[-2] > 1e-3  # pixels without a near tie for first place
        assert np.array_equal(got.source.reshape(-1)[clear], S[w.argmax(0)][clear])
        held = got.source.reshape(-1)[top > 0.5]
        for i, share in zip(got.images, got.share):
            assert share == pytest.approx(np.mean(held == i) * len(held) / len(top))
        assert got.shared == pytest.approx(np.mean(top <= 0.5), abs=2 / len(top))
    spread, both = lessons.pixel_maps(digits, tr, 4, 0, "cpu")  # one pass gives both maps
    np.testing.assert_allclose(spread, lessons.pixel_spread(digits, tr, 4, 0, "cpu"), atol=1e-6)
    assert np.array_equal(both.source, got.source) and np.allclose(both.top_w, got.top_w)
    opt = golddiff.sample(golddiff.make_denoiser("optimal", digits, device="cpu"), steps=3, n=1)
    src = lessons.pixel_sources(digits, opt, 2, 0, "cpu")
    assert np.all(src.source == opt.records[2].top_idx[0][0])
    assert lessons.pixel_sources(
        digits, golddiff.sample(golddiff.make_denoiser("wiener", digits, device="cpu"), steps=2,
                                n=1), 1, 0, "cpu") is None


def test_pixel_spread_matches_a_hand_formula_and_vanishes_where_images_agree(digits):
    """The spread std[m] = sqrt(sum_i w_i(m) (x_i[m] - x0_hat[m])^2) over each pixel's own
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
    """The t axes put pure noise on the left; log axes use powers of ten; How it
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
    """10,910.9 ms reads 10.9 s, not a clipped '10910.9 m'."""
    assert duration(10.9109) == "10.9 s" and duration(0.0123) == "12.3 ms"
    fig = lesson_figures.step_times({"pca": 10910.9, "wiener": 0.5}, {"pca": {}, "wiener": {}})
    assert list(fig.data[0].text) == ["10.9 s", "0.5 ms"]
    lo, hi = fig.layout.xaxis.range
    assert hi - math.log10(10910.9) >= 0.9  # room for the outside label
    nn = lesson_figures.nn_distances({"pca": np.array([0.1])}, 0.2)
    assert len(nn.layout.title.text) <= 45


# ----------------------------------------------------------------------------- the app, as shown


def _shown_text(at) -> str:
    """Every sentence and number the main area shows, and the text inside its Plotly charts."""
    parts = [e.value for kind in ("markdown", "caption", "warning", "info", "subheader")
             for e in getattr(at.main, kind)]
    parts += [f"{m.label} {m.value}" for m in at.main.metric]
    parts += [c.proto.spec for c in at.get("plotly_chart")]
    return "\n".join(parts)


def _first_tile(at, key: str) -> int:
    import json

    chart = next(c for c in at.get("plotly_chart") if c.proto.id.endswith(key))
    hover = next(t for t in json.loads(chart.proto.spec)["data"] if t.get("text"))["text"]
    return int(hover[0].split("#")[1].split("<")[0])


@pytest.mark.usefixtures("fresh_st_caches")
def test_default_run_marks_no_miss_at_t999_and_leads_with_the_heaviest_image_at_t0():
    from apptest import explorer_traj, ok, open_app

    at = open_app()
    ok(at)
    traj = explorer_traj(at)
    assert traj.records[0].t == 999 and traj.meta["method"] == "golddiff"
    assert "MISSED" not in _shown_text(at)
    data = golddiff.load_dataset(traj.meta["dataset"])
    last = len(traj.records) - 1
    at.select_slider(key="ex_step").set_value(last).run()
    ok(at)
    rec = traj.records[last]
    w = hand_global_weights(data, rec.x_t[0].reshape(-1), rec.abar)
    S = np.asarray(rec.subset_idx[0])
    assert _first_tile(at, "ex_subset") == int(S[np.argmax(w[S])])
    if int(np.argmax(w)) in set(S.tolist()):  # S_t holds the image that holds the weight
        assert _first_tile(at, "ex_subset") == int(np.argmax(w))


@pytest.mark.usefixtures("fresh_st_caches")
def test_wiener_shows_no_subset_caption_or_metric():
    from apptest import ok, open_app

    at = open_app("explorer", {"dataset": "digits", "method": "wiener", "steps": "3"})
    ok(at)
    for step in (0, 2):
        at.select_slider(key="ex_step").set_value(step).run()
        ok(at)
        views = [e.value for kind in ("caption", "warning", "subheader") for e in
                 getattr(at.main, kind) if not e.value.startswith("Samples with the sidebar")]
        views += [m.label for m in at.main.metric]
        text = "\n".join(views)
        for word in ("m_t", "k_t", "S_t", "golden subset", "Golden subset", "W_S"):
            assert word not in text, (word, text)


def test_tour_stops_are_read_off_the_run(run, digits):
    """Each stop shows the step its definition picks and quotes that step's numbers: the first
    step; the first with perplexity below N/10; the first miss (W_S < 1/2 while the posterior is
    narrower than k_t) or else the first catch; per-pixel ties; the last step and its nearest
    training image."""
    from golddiff.explore import tour

    b, N = 0, run.records[0].N
    route = tour.stops(run, b, nn=(7, 0.123), gap=0.2, held_at=lambda s: 11)
    assert [s.step for s in route][0] == 0 and route[-1].step == len(run.records) - 1
    assert f"{run.records[0].perplexity[b]:,.0f}" in route[0].text
    ppl = [float(r.perplexity[b]) for r in run.records]
    narrow = next((s for s, p in enumerate(ppl) if p < N / 10), len(ppl) - 1)
    assert route[1].step == narrow and f"{ppl[narrow]:,.0f} images" in route[1].text
    narrower = [s for s, r in enumerate(run.records) if ppl[s] < r.k_t]
    misses = [s for s in narrower if run.records[s].captured_mass[b] < 0.5]
    pool = route[2]
    assert pool.step == (misses or narrower)[0]
    assert f"{run.records[pool.step].captured_mass[b]:.3f}" in pool.text
    assert ("misses" in pool.title) == bool(misses)
    assert "11 training images" in route[3].text and "#7" in route[-1].text
    assert "0.123" in route[-1].text and "0.200" in route[-1].text
    missed = tour.stops(missed_run(run), 0)
    assert missed[2].step == 2 and "0.010" in missed[2].text  # the constructed miss
    wiener = golddiff.sample(golddiff.make_denoiser("wiener", digits, device="cpu"), steps=3, n=1)
    titles = [s.title for s in tour.stops(wiener, 0)]
    assert len(titles) == 3 and not any("pool" in t or "subset" in t or "pixel" in t
                                        for t in titles)


@pytest.mark.usefixtures("fresh_st_caches")
def test_a_tour_link_opens_its_stop_and_next_back_close_move_it():
    from apptest import explorer_traj, ok, open_app

    from golddiff.explore import tour

    at = open_app("explorer", {"dataset": "digits", "tour": "2"})
    ok(at)
    traj = explorer_traj(at)
    route = tour.stops(traj, 0)
    assert at.select_slider(key="ex_step").value == route[1].step
    assert any(m.value.startswith("**Tour 2/") for m in at.main.markdown)
    assert at.query_params["tour"] == ["2"] or at.query_params["tour"] == "2"
    at.button(key="ex_tour_next").click().run()
    ok(at)
    assert at.select_slider(key="ex_step").value == route[2].step
    at.button(key="ex_tour_back").click().run().button(key="ex_tour_back").click().run()
    ok(at)
    assert at.select_slider(key="ex_step").value == route[0].step
    at.button(key="ex_tour_close").click().run()
    ok(at)
    assert "tour" not in at.query_params and at.button(key="ex_tour_start")


def test_chart_captions_point_below_only_to_what_the_step_shows(digits):
    """A local run's Wiener steps have no golden subset and no per-pixel posterior: the support
    and entropy captions must not send the reader to a W_S or a *ties* note that is not there."""
    den = golddiff.make_denoiser("golddiff", digits, device="cpu", subset="local")
    traj = golddiff.sample(den, steps=5, n=2, seed=0)
    kinds = {r.subset_idx is not None for r in traj.records}
    assert kinds == {True, False}  # the run has Wiener steps and subset steps
    for rec in traj.records:
        sup, ent = figures.support_caption(traj, rec), figures.entropy_caption(traj, rec)
        assert ("(W_S below)" in sup) == (rec.subset_idx is not None)
        assert ("see *ties* under the images" in ent) == (rec.pixel_entropy is not None)
        if rec.subset_idx is None:
            assert rec.method in sup and rec.method in ent


def test_local_numbers_say_what_each_regime_built(digits):
    """Under the local subset the m_t metric is this sample's own pool: equal to its k_t where the
    pool is the subset (flat steps), the pool plus the images carried in on the sharp steps, and
    the captions name anchors only on the steps that refined at anchors and a carry only where
    images were carried in."""
    from app_pages.explorer_views import numbers_caption
    from golddiff.denoise import local_subset as ls

    den = golddiff.make_denoiser("golddiff", digits, device="cpu", subset="local")
    traj = golddiff.sample(den, steps=10, n=3, seed=1)
    regimes = set()
    for rec in traj.records:
        if rec.m_b is None:
            assert rec.method == "wiener"
            continue
        for b in range(3):
            m, k = galleries.pool_size(rec, b), galleries.subset_size(rec, b)
            assert m == int(rec.m_b[b]) and k == int(rec.k_b[b])
            sharp, flat = rec.snr >= ls.SHARP_SNR, rec.snr < ls.FLAT_SNR
            regimes.add("sharp" if sharp else "flat" if flat else "anchors")
            c = int(rec.c_b[b])
            if flat:
                assert m == k and c == 0
            if sharp:
                assert k == m + c
            text = numbers_caption(rec, b)
            assert ("carried on" in text) == (c > 0)
            assert ("anchor" in text) == (not sharp and not flat)
            assert ("uniform tail" in text) == (not flat and rec.snr < ls.TAIL_SNR and not sharp)
            assert ("anchor" in galleries._local_miss(rec)) == (not sharp and not flat)
    assert regimes == {"sharp", "flat", "anchors"}
