"""CUDA against the CPU on the same seed (marked `cuda`; scripts/gpu_check.py runs them on the
device named by GOLDDIFF_CHECK_DEVICE, default cuda, and they skip where it is missing)."""

import copy
import importlib.util
import os

import numpy as np
import pytest
import torch

from golddiff import make_denoiser, sample
from golddiff.denoise.corpus import CORPORA
from golddiff.run import selftest


@pytest.fixture(scope="module")
def dev():
    name = os.environ.get("GOLDDIFF_CHECK_DEVICE", "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("needs CUDA (or GOLDDIFF_CHECK_DEVICE=cpu for a rehearsal)")
    return torch.device(name)


@pytest.fixture(scope="module")
def data():
    if importlib.util.find_spec("sklearn") is None:
        return selftest.synthetic_images()
    from golddiff import load_dataset

    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _clean():
    CORPORA.clear()
    yield
    CORPORA.clear()


@pytest.mark.cuda
@pytest.mark.parametrize("config", selftest.CONFIGS, ids=[c[0] for c in selftest.CONFIGS])
def test_same_seed_same_samples_and_diagnostics(dev, data, config):
    res = selftest.equality(data, dev, steps=4, n=2, configs=[config])[config[0]]
    assert res["ok"], res


@pytest.mark.cuda
def test_estimated_diagnostics_match_the_cpu(dev, data):
    runs = [
        sample(make_denoiser("golddiff", data, device=d), steps=4, n=2, seed=1,
               diagnostics="estimated", diagnostics_tail=300)
        for d in ("cpu", dev)
    ]
    assert selftest.compare_runs(*runs)["ok"]
    for a, b in zip(*(r.records for r in runs)):
        np.testing.assert_allclose(b.ess_se, a.ess_se, rtol=1e-3, atol=1e-6)


def test_the_comparison_sees_a_difference(data):
    a = sample(make_denoiser("wiener", data, device="cpu"), steps=3, n=2, seed=0)
    assert selftest.compare_runs(a, a)["ok"]
    b = copy.deepcopy(a)
    b.samples = b.samples + 0.01
    assert not selftest.compare_runs(a, b)["ok"]
    c = copy.deepcopy(a)
    c.records[1].perplexity = c.records[1].perplexity * 1.01
    assert not selftest.compare_runs(a, c)["ok"]


def test_synthetic_images_need_nothing_and_sit_in_range():
    d = selftest.synthetic_images(n=50)
    assert d.images.shape == (50, 1, 8, 8) and d.N == 50
    assert float(d.images.min()) >= -1 and float(d.images.max()) <= 1
    assert len(set(d.labels.tolist())) > 1
