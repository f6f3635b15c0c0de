"""The bench table's structure on `digits` (seconds), and the optimized kernels against straightforward formulas.

No test here checks a timing: only structure, identities (pca vs itself) and equivalences."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from golddiff import load_dataset, make_denoiser
from golddiff.run import bench
from golddiff.data import Dataset
from golddiff.core.logits import mask_operator, pixel_logits
from golddiff.core.posterior import posterior
from reference import locality_logits

METHODS = ["pca", "golddiff", "optimal", "wiener", "hybrid"]


# ----------------------------------------------------------------------------- the CLI table


@pytest.fixture(scope="module")
def digits_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "golddiff",
            "bench",
            "--dataset",
            "digits",
            "--n",
            "2",
            "--steps",
            "4",
            "--sizes",
            "300,900",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return r, json.loads(out.read_text())


def test_bench_table_has_one_row_per_method(digits_bench):
    r, js = digits_bench
    lines = r.stdout.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("method"))
    cols = lines[head].split()
    assert cols[:6] == ["method", "ms/step", "screen", "select", "aggr", "speedup"]
    rows = [l.split() for l in lines[head + 2 : head + 2 + len(METHODS)]]
    assert [row[0] for row in rows] == METHODS
    assert all(len(row) == len(cols) for row in rows)
    pca = rows[0]
    assert float(pca[cols.index("speedup")]) == pytest.approx(1.0)
    assert "step" in r.stderr  # the progress line


def test_bench_json_round_trips_and_pca_matches_itself(digits_bench):
    _, js = digits_bench
    assert list(js["methods"]) == METHODS and len(js["t"]) == 4 == len(js["snr"])
    pca = js["methods"]["pca"]
    assert pca["speedup"] == pytest.approx(1.0)
    assert pca["final_r2"] == pytest.approx(1.0) and pca["final_mse"] == pytest.approx(0.0)
    assert pca["onestep_r2"] == pytest.approx([1.0] * 4, abs=1e-6)  # measured at its own states
    for m, r in js["methods"].items():
        assert set(r["phase_ms"]) == {"screen", "select", "aggregate"}
        assert len(r["step_ms"]) == 4 and len(r["onestep_r2"]) == 4
        assert r["total_ms"] == pytest.approx(
            sum(r["step_ms"])
        )  # the summaries agree with the steps
        assert r["ms_per_step"] == pytest.approx(float(np.median(r["step_ms"])))
    gd = js["methods"]["golddiff"]["captured_mass"]
    assert len(gd) == 4 and all(0.0 <= v <= 1.0 + 1e-6 for v in gd)
    assert js["methods"]["wiener"]["captured_mass"] == []
    assert set(js["sizes"]) == {"300", "900"} and set(js["sizes"]["300"]) == set(METHODS)
    assert set(js["growth_exponent"]) == set(METHODS)
    # the text report is rebuilt from the JSON alone
    assert bench.format_report(js).splitlines()[0].split()[0] == "method"


@pytest.mark.parametrize(
    "argv,needle",
    [(["--methods", "pca,nope"], "nope"), (["--sizes", "5000"], "5000"), (["--sizes", "5k"], "5k")],
)
def test_bench_bad_input_is_one_sentence(argv, needle):
    r = subprocess.run(
        [sys.executable, "-m", "golddiff", "bench", "--dataset", "digits"] + argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_compare_keeps_its_signature_and_fields():
    ds = load_dataset("digits").subset(200, 0)
    res = bench.compare(ds, ["golddiff", "wiener"], 3, 2, 0, {}, "cpu", True, None)
    assert list(res) == ["pca", "golddiff", "wiener"]
    g = res["golddiff"]
    assert g.trajectory.samples.shape == (2, 1, 8, 8) and len(g.onestep_r2) == 3 == len(
        g.onestep_mse
    )
    a = g.trajectory.samples.reshape(2, -1).astype(np.float64)
    b = res["pca"].trajectory.samples.reshape(2, -1).astype(np.float64)
    r2 = 1 - ((a - b) ** 2).sum(1) / (a.shape[1] * b.var(1))  # the paper's r^2, by hand
    assert g.final_r2 == pytest.approx(float(r2.mean()), abs=1e-5)
    assert g.final_mse == pytest.approx(float((((a - b) / 2) ** 2).mean()), abs=1e-7)
    with pytest.raises(ValueError, match="Unknown method"):
        bench.compare(ds, ["nope"], 2, 1)


def test_snr_buckets_and_growth_exponent():
    assert bench.snr_buckets([0.001, 0.05, 0.07, 50.0], [0.9, 0.8, 0.7, 0.6]) == {
        "0-0.01": 0.9,
        "0.01-0.1": 0.7,
        ">=10": 0.6,
    }
    assert bench.growth_exponent([1000, 2000, 4000], [1.0, 2.0, 4.0]) == pytest.approx(1.0)
    assert bench.growth_exponent([1000], [1.0]) is None


# ----------------------------------------------------------------------------- kernels vs the plain formula


def _case(D=36, c=50, density=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(c, D, generator=g) * 2 - 1
    x = torch.randn(D, generator=g)
    M = (torch.rand(D, D, generator=g) < density).float()
    M.fill_diagonal_(1.0)
    return x, X, M


@pytest.mark.parametrize("density", [0.03, 0.3, 1.0])
@pytest.mark.parametrize("sparse", [False, True])
def test_masked_logits_T_equal_the_plain_formula(density, sparse):
    x, X, M = _case(density=density)
    abar, tau = 0.4, 0.7
    want = locality_logits(x[None], X, M, abar, tau)[0]  # (c, D)
    # independent: the loop over output pixels of the formula itself
    s, coef = math.sqrt(abar), -1 / (2 * (1 - abar) * tau)
    plain = torch.stack(
        [coef * (M[:, m] * (x - s * X).square()).sum(1) for m in range(X.shape[1])], 1
    )
    op = mask_operator(M, abar, tau, sparse=sparse)
    assert op.sparse == sparse
    got = pixel_logits(x, X.T.contiguous(), s, op).T
    assert torch.allclose(got, plain, atol=1e-5) and torch.allclose(got, want, atol=1e-5)
    work = {}
    again = pixel_logits(x, X.T.contiguous(), s, op, work).T  # with reused buffers
    assert torch.allclose(again, got) and set(work) == {"d", "L"}


def test_sparse_form_is_chosen_by_density():
    _, _, M = _case(D=30, density=0.0)
    assert mask_operator(M, 0.5).sparse  # diagonal: 1/30 dense
    assert not mask_operator(torch.ones(30, 30), 0.5).sparse


def test_streamed_scan_equals_softmax():
    """The kernel over uneven chunks of shared rows: mean, entropy, captured mass and the second
    moment of the per-pixel softmax written out."""
    x, X, M = _case(c=40)
    abar = 0.4
    L = locality_logits(x[None], X, M, abar, 1.0)[0].double()  # (c, D)
    w = torch.softmax(L, 0)
    flag = torch.zeros(1, 40, dtype=torch.bool)
    flag[0, ::3] = True
    chunks = ((i, X[i : i + 13]) for i in range(0, 40, 13))
    acc = posterior(x[None], chunks, M, abar, flag=flag, moments=2)
    Xd = X.double()
    assert torch.allclose(acc.mean()[0].double(), (w * Xd).sum(0), atol=1e-5)
    assert torch.allclose(acc.entropy()[0].double(), torch.special.entr(w).sum(0), atol=1e-4)
    assert torch.allclose(acc.captured()[0].double(), w[flag[0]].sum(0), atol=1e-6)
    assert torch.allclose(acc.second_moment()[0].double(), (w * Xd.square()).sum(0), atol=1e-5)


def _toy(N=120, side=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    return Dataset(
        f"toy{seed}", torch.rand(N, 1, side, side, generator=g) * 2 - 1, np.zeros(N, np.int64)
    )


@pytest.mark.parametrize("t", [900, 300, 0])
def test_denoisers_equal_the_straightforward_softmax(t):
    """PCA full scan and GoldDiff's subset aggregation against softmax(locality_logits) over the same images."""
    ds = _toy()
    X = ds.flat()
    pca = make_denoiser("pca", ds, device="cpu")
    abar = pca.schedule.abar(t)
    x_t = math.sqrt(abar) * X[:3] + math.sqrt(1 - abar) * torch.randn(
        3, ds.D, generator=torch.Generator().manual_seed(1)
    )
    M = pca.mask(t, abar)
    w = torch.softmax(locality_logits(x_t, X, M, abar, 1.0).double(), 1)  # (B, N, D)
    out = pca.denoise(x_t, t)
    assert torch.allclose(out.x0_hat.double(), (w * X.double()[None]).sum(1), atol=1e-5)
    assert torch.allclose(out.pixel_entropy.double(), torch.special.entr(w).sum(1), atol=1e-4)
    gd = make_denoiser("golddiff", ds, device="cpu", k_min=30, k_max=60)
    o = gd.denoise(x_t, t, generator=torch.Generator().manual_seed(0))
    Xs = X[o.subset]  # (B, k, D)
    ws = torch.softmax(locality_logits(x_t, Xs, M, abar, 1.0).double(), 1)
    assert torch.allclose(o.x0_hat.double(), (ws * Xs.double()).sum(1), atol=1e-5)
    assert torch.allclose(o.subset_weight.double(), ws.mean(2), atol=1e-6)
    acc = posterior(x_t, X, M, abar, idx=o.subset, weights=True)  # the kernel itself
    assert torch.allclose(acc.mean(), o.x0_hat, atol=1e-6)
    assert torch.allclose(torch.stack(acc.image_w), o.subset_weight, atol=1e-7)


# ----------------------------------------------------------------------------- the pool draw


def test_pool_draw_is_uniform_duplicate_free_and_reproducible():
    ds = _toy(N=50)
    gd = make_denoiser("golddiff", ds, device="cpu", k_min=5, k_max=10)
    a = gd.draw_pool(20, 4, torch.Generator().manual_seed(7))
    b = gd.draw_pool(20, 4, torch.Generator().manual_seed(7))
    assert a.shape == (4, 20) and torch.equal(a, b)
    for row in a:
        assert len(set(row.tolist())) == 20 and 0 <= int(row.min()) and int(row.max()) < 50
    assert gd.draw_pool(50, 3, torch.Generator().manual_seed(0)) is None
    # uniform: every index appears with frequency m / N over many draws (chi-square, loose bound)
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(50)
    draws = 400
    for _ in range(draws):
        counts += torch.bincount(gd.draw_pool(20, 2, g).flatten(), minlength=50)
    expected = draws * 2 * 20 / 50
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 100  # 49 degrees of freedom: p(chi2 > 100) ~ 2e-5
    # different samples of one batch get different subsets
    assert not torch.equal(a[0], a[1])
