"""Unit tests of golddiff.figures: trace counts, log axes, the chosen-step marker sits at that step's SNR."""

import math

import numpy as np
import pytest
import torch

import golddiff
from golddiff.explore import figures, galleries, lessons
from golddiff import DenoiserParams, make_denoiser


@pytest.fixture(scope="module")
def digits():
    return golddiff.load_dataset("digits")


@pytest.fixture(scope="module")
def runs(digits):
    """One short run per kind of method: with a golden subset (golddiff) and without (optimal, wiener)."""
    p = DenoiserParams.dataset_defaults(digits.N, digits.shape)
    out = {}
    for m in ("golddiff", "optimal", "wiener"):
        den = make_denoiser(m, digits, device="cpu", **p)
        out[m] = golddiff.sample(den, steps=6, n=3, seed=1)
    return out


def marker(fig):
    return next(t for t in fig.data if t.name == "chosen step")


@pytest.mark.parametrize("step", [0, 3, 5])
def test_entropy_vs_snr(runs, step):
    traj = runs["golddiff"]
    fig = figures.entropy_vs_snr(traj, step, 1)
    B = traj.samples.shape[0]
    # B global-entropy lines + B per-pixel lines + log N + the marker
    assert len(fig.data) == 2 * B + 2
    assert fig.layout.xaxis.type == "log"
    m = marker(fig)
    assert set(m.x) == {traj.records[step].snr}
    assert m.y[0] == pytest.approx(traj.records[step].entropy[1])
    logN = next(t for t in fig.data if t.name.startswith("log N"))
    assert list(logN.y) == [pytest.approx(math.log(traj.records[0].N))] * 2
    bold = [t for t in fig.data if t.showlegend is not False and t.legendgroup == "H"]
    assert len(bold) == 1 and bold[0].line.width == 3


def test_entropy_without_pixel_maps_has_no_pixel_lines(runs):
    traj = runs["wiener"]  # Gaussian: no per-pixel posterior
    fig = figures.entropy_vs_snr(traj, 2, 0)
    assert len(fig.data) == traj.samples.shape[0] + 2
    assert len(marker(fig).y) == 1


@pytest.mark.parametrize("step", [0, 5])
def test_support_vs_snr(runs, step):
    traj = runs["golddiff"]
    fig = figures.support_vs_snr(traj, step, 2)
    names = [t.name for t in fig.data]
    # perplexity, ESS, k_0.99, k_t, m_t, N, marker
    assert len(fig.data) == 7, names
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    m = marker(fig)
    assert set(m.x) == {traj.records[step].snr}
    rec = traj.records[step]
    assert list(m.y) == pytest.approx([rec.perplexity[2], rec.ess[2], rec.k99[2], rec.k_t])
    k_t = next(t for t in fig.data if "k_t" in t.name)
    assert list(k_t.y) == [r.k_t for r in traj.records]


def test_support_without_subset_has_no_budgets(runs):
    fig = figures.support_vs_snr(runs["optimal"], 1, 0)
    assert len(fig.data) == 5  # 3 support curves, N, marker
    assert not any("k_t" in t.name or "m_t" in t.name for t in fig.data)


def test_step_images(runs):
    traj = runs["golddiff"]
    fig = galleries.step_images(traj, 2, 0)
    assert len(fig.data) == 3
    xt, x0, H = fig.data
    assert np.allclose(np.asarray(xt.z), traj.records[2].x_t[0, 0])
    assert np.allclose(np.asarray(x0.z), traj.records[2].x0_hat[0, 0])
    assert H.showscale is not False and H.zmin == 0
    # one colour scale for every step of the sample
    assert H.zmax == pytest.approx(max(float(r.pixel_entropy[0].max()) for r in traj.records))
    assert len(galleries.step_images(runs["wiener"], 2, 0).data) == 2  # no per-pixel posterior


def test_subset_gallery_tiles(runs, digits):
    traj = runs["golddiff"]
    idx, w = lessons.subset_by_weight(digits, traj, 4, 1, "cpu")
    assert np.all(np.diff(np.log(np.maximum(w, 1e-300))) <= 1e-6)  # ranked by weight
    assert set(idx) == set(traj.records[4].subset_idx[1])  # all of S_t
    assert lessons.subset_by_weight(digits, runs["optimal"], 4, 1, "cpu") is None

    fig = galleries.subset_gallery(idx, w, digits.images)
    img, hover = fig.data
    z = np.asarray(img.z)
    H, W = digits.shape[1:]
    tile = (np.clip((digits.images[int(idx[0]), 0].numpy() + 1) / 2, 0, 1) * 255).round()
    assert np.array_equal(z[:H, :W], tile)  # rank 1 in the top-left corner
    assert len(fig.layout.annotations) == 16 and fig.layout.annotations[0].text.startswith("#1 ")
    assert [h.split("<br>")[0] for h in hover.text] == [f"training image #{i}" for i in idx[:16]]


def test_gallery_rgb_and_height():
    imgs = np.random.default_rng(0).uniform(-1, 1, (5, 3, 6, 6)).astype(np.float32)
    fig = galleries.gallery(imgs, [str(i) for i in range(5)], ncol=3)
    assert fig.data[0].type == "image" and np.asarray(fig.data[0].z).shape[2] == 3
    assert len(fig.data) == 1 and len(fig.layout.annotations) == 5
    one_row = galleries.gallery(imgs[:3], [str(i) for i in range(3)], ncol=3)
    assert fig.layout.height > one_row.layout.height  # a second row of images adds height


class FakeMap:
    """Stands in for golddiff.explore.embed.EmbeddingMap: every image at (index, 0); transform at (mean pixel, 1)."""

    def __init__(self, N):
        self.coords = np.stack([np.arange(N), np.zeros(N)], 1).astype(np.float32)

    def locate(self, idx):
        idx = np.asarray(idx)
        return np.stack([idx, np.zeros(len(idx))], 1).astype(np.float32)

    def transform(self, x):
        x = torch.as_tensor(np.asarray(x)).float()
        return np.stack([x.mean(1).numpy(), np.ones(x.shape[0])], 1)


def test_umap_figure(runs, digits):
    traj = runs["golddiff"]
    fig = figures.umap_figure(FakeMap(digits.N), traj, 3, 0)
    names = [t.name for t in fig.data]
    assert len(fig.data) == 6, names  # training set, S_t, exact top, its top image, path, now
    assert len(fig.data[0].x) == digits.N
    assert sorted(fig.data[1].x) == sorted(traj.records[3].subset_idx[0].astype(float))
    assert fig.data[3].x[0] == traj.records[3].top_idx[0][0]  # the star on the top image
    assert len(fig.data[4].x) == len(traj.records)
    assert fig.data[5].x[0] == pytest.approx(traj.records[3].x0_hat[0].mean(), abs=1e-5)
    # without a subset there is no S_t layer
    fig2 = figures.umap_figure(FakeMap(digits.N), runs["optimal"], 3, 0)
    assert len(fig2.data) == 5 and "exact posterior" in fig2.data[1].name


def test_pixel_source_mosaic_colours_each_held_pixel_by_its_source(digits):
    """The mosaic paints a pixel in its source's colour exactly where that image holds more than
    half the pixel's weight, grey for other holders, light where no image holds a majority; the
    gallery lists the coloured images with their shares and the caption quotes them."""
    from golddiff.explore import source_figures as sf

    traj = golddiff.sample(make_denoiser("golddiff", digits, device="cpu"), steps=4, n=1, seed=0)
    src = lessons.pixel_sources(digits, traj, 3, 0, "cpu")
    assert len(src.images) > 0  # the last step: some pixels have a single source
    rgb = sf.mosaic(src)  # (H, W, 3)
    source, top = src.source[0], src.top_w[0]
    for i, color in zip(src.images[: len(sf.SOURCE_COLORS)], sf.SOURCE_COLORS):
        painted = np.all(rgb == sf._rgb(color), axis=2)
        assert np.array_equal(painted, (source == i) & (top > 0.5))
    assert np.array_equal(np.all(rgb == sf._rgb(sf.SHARED), axis=2), top <= 0.5)
    notes = [a.text for a in sf.sources_gallery(src, digits.images).layout.annotations]
    assert len(notes) == min(6, len(src.images))
    assert all(f"#{int(i)}" in n and f"{s:.1%}" in n for n, i, s in zip(notes, src.images, src.share))
    text = sf.sources_caption(src, traj.records[3])
    assert f"{sf._pct(src.shared)} of the pixels" in text and f"{len(src.images):,} image" in text
    # a share never rounds to 0% or 100% when it is neither
    assert (sf._pct(0.001), sf._pct(0.999), sf._pct(0.0), sf._pct(0.5)) == (
        "under 1%", "over 99%", "0%", "50%")
