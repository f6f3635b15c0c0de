"""Validation at the library boundary: every error a user can cause is a ValueError
with one sentence saying what to change, in the library and through the CLI (exit status 2, no traceback);
the memory guard refuses structures that would not fit instead of letting the process be killed."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from golddiff import NoiseSchedule, load_dataset, make_denoiser, sample
from golddiff.data import memory
from golddiff.cli import main
from golddiff.data import Dataset
from golddiff.denoise.corpus import get_corpus
from golddiff.core.stats import DataStats
from golddiff.denoise.params import DenoiserParams

_COUNTER = iter(range(10**6))


def one_sentence(msg: str) -> str:
    """The message is one line, one sentence ending in a period, and names no Python internals."""
    assert "\n" not in msg and msg.endswith("."), msg
    assert ". " not in msg.replace("e.g. ", ""), f"more than one sentence: {msg}"
    assert "Traceback" not in msg and "Error" not in msg, msg
    return msg


def raises(fn, *fragments):
    """Call fn, expect a ValueError whose message is one sentence containing every fragment."""
    with pytest.raises(ValueError) as e:
        fn()
    msg = one_sentence(str(e.value))
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def make_ds(N, shape=(1, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand((N,) + tuple(shape), generator=g) * 2 - 1
    return Dataset(f"val-{next(_COUNTER)}", images, np.zeros(N, np.int64))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _no_memory_limit(monkeypatch):
    """Each test starts without a max_memory setting and leaves none behind (the CLI sets a process-wide one)."""
    monkeypatch.delenv(memory.ENV_VAR, raising=False)
    memory.set_max_memory(None)
    yield
    memory.set_max_memory(None)


# ----------------------------------------------------------------------------- names


def test_unknown_dataset_lists_the_valid_ones():
    msg = raises(
        lambda: load_dataset("imagenet-22k"), "Unknown dataset 'imagenet-22k'", "digits", "mnist-5k"
    )
    assert "choose one of" in msg


def test_unknown_method_lists_the_valid_ones(digits):
    raises(
        lambda: make_denoiser("diffusion", digits, device="cpu"),
        "Unknown method 'diffusion'",
        "optimal, wiener, pca, golddiff, hybrid",
    )


def test_unknown_parameter_is_named(digits):
    raises(
        lambda: make_denoiser("pca", digits, device="cpu", kmax=10),
        "kmax",
        "temperature, mask_threshold",
    )


def test_unknown_pool_mode(digits):
    raises(
        lambda: make_denoiser("golddiff", digits, device="cpu", pool="far"),
        "Unknown pool mode 'far'",
        "random, nearest",
    )


# ----------------------------------------------------------------------------- sizes


def test_k_min_larger_than_k_max(digits):
    raises(
        lambda: make_denoiser("golddiff", digits, device="cpu", k_min=50, k_max=10),
        "k_min=50 is larger than k_max=10",
        "k_min <= k_max",
    )


@pytest.mark.parametrize("method", ["golddiff", "hybrid"])
def test_k_larger_than_N_says_N(digits, method):
    raises(
        lambda: make_denoiser(method, digits, device="cpu", k_min=10, k_max=5000),
        "k_max=5000",
        f"N={digits.N}",
        f"k_max <= {digits.N}",
    )


def test_k_below_one_and_not_whole(digits):
    raises(lambda: make_denoiser("golddiff", digits, device="cpu", k_min=0, k_max=10), "at least 1")
    raises(
        lambda: make_denoiser("golddiff", digits, device="cpu", k_min=2.5, k_max=10),
        "k_min=2.5",
        "whole number",
    )
    d = make_denoiser(
        "golddiff", digits, device="cpu", k_min=np.int64(5), k_max=10.0
    )  # whole values pass
    assert (d.k_min, d.k_max) == (5, 10)


@pytest.mark.parametrize("steps", [0, -3, 1001])
def test_steps_outside_range(digits, steps):
    den = make_denoiser("optimal", digits, device="cpu")
    raises(lambda: sample(den, steps=steps, n=1), f"steps={steps}", "1..1000")
    raises(lambda: NoiseSchedule().timesteps(steps), f"steps={steps}")


def test_timestep_outside_schedule():
    raises(lambda: NoiseSchedule().abar(1000), "Timestep 1000", "0..999")


@pytest.mark.parametrize("n", [0, -1, 4097])
def test_n_samples_out_of_range(digits, n):
    den = make_denoiser("optimal", digits, device="cpu")
    raises(lambda: sample(den, steps=2, n=n), f"n={n}", "1 and 4096")


def test_start_noise_of_the_wrong_shape(digits):
    den = make_denoiser("optimal", digits, device="cpu")
    raises(
        lambda: sample(den, steps=2, x_T=torch.zeros(2, 10)),
        "x_T has shape (2, 10)",
        f"(B, {digits.D})",
    )


def test_resolution_the_proxy_pooling_cannot_divide(digits):
    raises(
        lambda: make_denoiser("golddiff", digits, device="cpu", low_res=3),
        "Proxy resolution 3 does not divide the 8x8 images",
        "divides 8",
    )


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("tau", [0, -1.0, math.nan, math.inf])
@pytest.mark.parametrize("method", ["optimal", "pca", "golddiff"])
def test_temperature_must_be_positive(digits, method, tau):
    raises(
        lambda: make_denoiser(method, digits, device="cpu", temperature=tau),
        "temperature=",
        "at least",
    )


def test_mask_threshold_and_snr_switch_ranges(digits):
    raises(
        lambda: make_denoiser("pca", digits, device="cpu", mask_threshold=1.5),
        "mask_threshold=1.5",
        "[0, 1]",
    )
    raises(lambda: make_denoiser("hybrid", digits, device="cpu", snr_switch=-1), "snr_switch=-1")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("method", ["optimal", "wiener", "pca", "golddiff", "hybrid"])
def test_non_finite_x_t(digits, method, bad):
    den = make_denoiser(method, digits, device="cpu")
    x = torch.zeros(2, digits.D)
    x[1, 5] = bad
    raises(lambda: den.denoise(x, 500), "x_t contains NaN or infinite values")


def test_non_finite_start_noise_through_sample(digits):
    den = make_denoiser("golddiff", digits, device="cpu")
    x = torch.randn(2, digits.D)
    x[0, 0] = math.nan
    raises(lambda: sample(den, steps=2, x_T=x), "NaN or infinite")


# ----------------------------------------------------------------------------- the memory guard


@pytest.mark.parametrize(
    "spec,want",
    [
        ("2GB", 2e9),
        ("512 MB", 512e6),
        ("1.5GiB", 1.5 * 2**30),
        ("100", 100),
        ("3k", 3000),
        (2048, 2048),
    ],
)
def test_parse_bytes(spec, want):
    assert memory.parse_bytes(spec) == int(want)


@pytest.mark.parametrize("spec", ["lots", "2 parsecs", "-1GB", "0", ""])
def test_bad_memory_settings(spec, monkeypatch):
    raises(lambda: memory.parse_bytes(spec), "memory size")
    if spec:
        monkeypatch.setenv(memory.ENV_VAR, spec)
        raises(memory.max_memory, memory.ENV_VAR)


def test_corpus_refused_under_a_tiny_limit(monkeypatch):
    ds = make_ds(2000)
    monkeypatch.setenv(memory.ENV_VAR, "1kB")
    msg = raises(
        lambda: make_denoiser("optimal", ds, device="cpu"),
        f"placing '{ds.name}'",
        "needs ~",
        "max_memory limit of 1.0 kB",
        "smaller dataset",
        "raise --max-memory",
    )
    monkeypatch.delenv(memory.ENV_VAR)
    make_denoiser("optimal", ds, device="cpu")  # nothing half-built: works once the limit is lifted
    assert "16.0 kB" in msg  # sqnorm (N float32) + a chunk: 2000 * 8 bytes


def test_covariance_refused(monkeypatch):
    ds = make_ds(300, shape=(1, 16, 16))  # D = 256: four (D, D) float64 = 2.1 MB
    c = get_corpus(ds, "cpu")
    monkeypatch.setenv(memory.ENV_VAR, "1MB")
    raises(
        lambda: DataStats.from_data(c.X),
        "(256, 256) float64 data covariance",
        "lower-resolution dataset",
    )
    raises(
        lambda: make_denoiser("wiener", ds, device="cpu").denoise(torch.zeros(1, 256), 500),
        "(256, 256) float64 data covariance",
    )
    monkeypatch.delenv(memory.ENV_VAR)
    st = DataStats.from_data(c.X)
    memory.set_max_memory("1MB")  # the setting overrides / replaces the env var
    raises(lambda: st.mask(500, 0.5, 0.02), "(256, 256) PCA-locality mask")


def test_proxy_index_refused(monkeypatch):
    ds = make_ds(2000)  # corpus ~16 kB, proxies (2000, 4) + norms ~40 kB
    get_corpus(ds, "cpu")
    monkeypatch.setenv(memory.ENV_VAR, "30kB")
    raises(
        lambda: make_denoiser("golddiff", ds, device="cpu", k_min=10, k_max=20),
        "proxy index",
        "N=2000, d=4",
        "--low-res",
    )


def test_golden_subset_refused(monkeypatch):
    ds = make_ds(2000)
    den = make_denoiser("golddiff", ds, device="cpu", k_min=2000, k_max=2000, pool="nearest")
    x = torch.randn(8, ds.D)
    den.denoise(x[:1], 500)  # statistics and mask are built and cached
    monkeypatch.setenv(memory.ENV_VAR, "1MB")  # (8, 2000, 16) gathered + work: ~4.1 MB
    raises(
        lambda: den.denoise(x, 500),
        "(8, 2000, 16) golden subset",
        "lower --n or --k-max",
        "raise --max-memory",
    )


@pytest.mark.parametrize(
    "method,what", [("pca", "full-scan PCA-locality step"), ("optimal", "full-scan optimal step")]
)
def test_full_scan_refused(monkeypatch, method, what):
    ds = make_ds(2000)
    den = make_denoiser(method, ds, device="cpu")
    x = torch.randn(64, ds.D)
    den.denoise(x[:1], 500)
    monkeypatch.setenv(memory.ENV_VAR, "300kB")
    raises(lambda: den.denoise(x, 500), what, "n=64", "lower --n")


def test_diagnostics_global_posterior_refused(monkeypatch):
    ds = make_ds(2000)
    den = make_denoiser("wiener", ds, device="cpu")
    den.denoise(torch.zeros(1, ds.D), 500)
    monkeypatch.setenv(memory.ENV_VAR, "1MB")  # 8 (64, 2000) float32 = 4.1 MB
    raises(lambda: sample(den, steps=2, n=64), "(64, 2000) global posterior", "lower --n")


def test_refused_for_lack_of_device_memory(monkeypatch):
    ds = make_ds(2000)
    den = make_denoiser("optimal", ds, device="cpu")
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 50_000)
    msg = raises(
        lambda: den.denoise(torch.zeros(64, ds.D), 500),
        "needs ~",
        "more than the 50.0 kB free on cpu",
        "lower --n",
    )
    assert "--max-memory" not in msg  # raising the setting would not help here


def test_available_bytes_on_cpu_is_plausible():
    free = memory.available_bytes("cpu")
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < free <= total


# ----------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(
    "argv,fragments",
    [
        (["--dataset", "nope"], ["Unknown dataset 'nope'", "digits"]),
        (["--method", "nope"], ["Unknown method 'nope'", "golddiff, hybrid"]),
        (["--k-min", "50", "--k-max", "10"], ["k_min=50 is larger than k_max=10"]),
        (["--k-min", "10", "--k-max", "5000"], ["N=1797"]),
        (["--steps", "0"], ["steps=0", "1..1000"]),
        (["--steps", "1001"], ["steps=1001"]),
        (["--n", "0"], ["n=0", "1 and 4096"]),
        (["--low-res", "3"], ["Proxy resolution 3"]),
        (["--temperature", "0"], ["temperature=0"]),
        (["--temperature", "nan"], ["temperature=nan"]),
        (["--max-memory", "lots"], ["--max-memory='lots' is not a memory size"]),
        (["--max-memory", "10kB", "--n", "64"], ["needs ~", "10.0 kB", "raise --max-memory"]),
        (["--recall"], ["--recall measures the approximate faiss-ivf screen", "--backend faiss-ivf"]),
        (["--recall", "--backend", "faiss-ivf", "--shard", "corpus"], ["drop --shard"]),
    ],
)
def test_cli_user_errors_exit_2_with_one_sentence(argv, fragments, capsys):
    full = ["sample", "--dataset", "digits", "--steps", "2", "--n", "2", "--device", "cpu"] + argv
    assert main(full) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ")
    msg = one_sentence(err[len("error: ") :])
    for f in fragments:
        assert f in msg, (f, msg)


def test_cli_argparse_rejects_unknown_pool(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--dataset", "digits", "--pool", "far"])
    assert e.value.code == 2 and "invalid choice: 'far'" in capsys.readouterr().err


def _cli(args, env=None):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "golddiff",
            "sample",
            "--dataset",
            "digits",
            "--steps",
            "2",
            "--n",
            "2",
            "--device",
            "cpu",
        ]
        + args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args,env,fragment",
    [
        (["--k-min", "50", "--k-max", "10"], None, "k_min=50 is larger than k_max=10"),
        (["--method", "pca", "--temperature", "-1"], None, "temperature=-1"),
        ([], {"GOLDDIFF_MAX_MEMORY": "1kB"}, "max_memory limit of 1.0 kB"),
        ([], {"GOLDDIFF_MAX_MEMORY": "a lot"}, "GOLDDIFF_MAX_MEMORY='a lot' is not a memory size"),
    ],
)
def test_cli_subprocess_exit_2_no_traceback(args, env, fragment):
    r = _cli(args, env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and fragment in line
    one_sentence(line[len("error: ") :])


def test_cli_max_memory_flag_beats_a_tiny_env_var():
    r = _cli(["--max-memory", "8GB", "--method", "optimal"], {"GOLDDIFF_MAX_MEMORY": "1kB"})
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- numeric edges


@pytest.mark.parametrize("tau", [1e-40, 1e-300, 5e-324])
@pytest.mark.parametrize("method", ["optimal", "wiener", "pca", "golddiff"])
def test_a_tiny_temperature_is_refused_with_its_range(digits, method, tau):
    msg = raises(
        lambda: make_denoiser(method, digits, device="cpu", temperature=tau), "temperature="
    )
    floor = DenoiserParams.temperature_floor(digits.N, digits.shape)
    assert f"{floor:.3g}" in msg and 0 < floor < 1e-20


def test_the_temperature_floor_scales_as_its_bound(digits):
    """The floor is 4 N L / FLOAT32_MAX with L the largest logit at tau = 1: linear in N and in D,
    inverse in sigma_min^2 (finiteness at the floor itself is the property test's edge case)."""
    f = DenoiserParams.temperature_floor
    assert f(2 * digits.N, digits.shape) == pytest.approx(2 * f(digits.N, digits.shape))
    assert f(digits.N, (1, 16, 16)) == pytest.approx(4 * f(digits.N, digits.shape))
    assert f(digits.N, digits.shape, sigma2_min=2e-4) == pytest.approx(
        f(digits.N, digits.shape) / 2
    )


def test_cli_tiny_temperature_exits_2_naming_it(capsys):
    argv = ["sample", "--dataset", "digits", "--method", "wiener", "--temperature", "1e-300"]
    assert main(argv + ["--steps", "2", "--samples", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "temperature=1e-300" in one_sentence(err[0][len("error: ") :])


def test_pixel_entropy_has_no_cancellation_at_large_logits():
    """H = log s0 - sum e (logit - mx) / s0 is the entropy of the softmax whatever the logits'
    magnitude (the float64 closed form): no negative or exploding entropy at a tiny temperature."""
    from golddiff.core.posterior import StreamingSoftmax

    g = torch.Generator().manual_seed(0)
    for offset in (0.0, 1e4, 1e8, 1e20):  # the logits of a tiny temperature: far from 0
        logits = -offset - 5.0 * torch.rand(2, 500, 3, generator=g)  # (B, c, P)
        acc = StreamingSoftmax()
        acc.add(logits[:, :200], None, moments=0)
        acc.add(logits[:, 200:], None, moments=0)
        want = torch.special.entr(torch.softmax(logits.double(), dim=1)).sum(1)
        torch.testing.assert_close(acc.entropy().double(), want, atol=1e-4, rtol=1e-4)


def test_records_refuse_non_finite_diagnostics(digits):
    from golddiff.run.records import check_finite

    den = make_denoiser("wiener", digits, device="cpu")
    rec = sample(den, steps=2, n=2).records[0]
    check_finite(rec)  # a normal record passes
    rec.ess = np.array([1.0, math.nan], np.float32)
    msg = raises(lambda: check_finite(rec), "ESS", f"t = {rec.t}")
    assert "nan" not in msg.lower().replace("nan or", "")


def _wide_floats():
    """Floats over the whole double range (both signs, every exponent), plus plain values."""
    from hypothesis import strategies as st

    tiny_to_huge = st.builds(
        lambda m, e, s: s * m * 10.0**e,
        st.floats(1.0, 9.99),
        st.integers(-323, 300),
        st.sampled_from([1.0, 1.0, 1.0, -1.0]),
    )
    return st.one_of(st.floats(-2.0, 2.0), tiny_to_huge)


def _numeric_specs():
    return [s for s in DenoiserParams.specs() if s.choices is None]


@pytest.mark.parametrize("name", [s.name for s in _numeric_specs()])
def test_no_accepted_value_gives_a_non_finite_diagnostic(digits, name):
    """Property: any value of a numeric parameter that validation accepts (the others at their
    defaults) yields a run on digits whose every diagnostic is finite."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from hypothesis import example

    spec = DenoiserParams.dataset_specs(digits.N, digits.shape)[name]
    values = st.integers(-2, 3 * digits.N) if spec.kind is int else _wide_floats()
    extra = {"backend": "faiss-ivf"} if name in ("nlist", "nprobe") else {}

    def run(value, method):
        params = DenoiserParams.from_mapping({name: value, **extra})
        try:
            den = make_denoiser(method, digits, device="cpu", params=params)
        except ValueError as e:
            one_sentence(str(e))
            return
        traj = sample(den, steps=2, n=2, exact_check=method in ("pca", "golddiff", "hybrid"))
        for rec in traj.records:
            check_finite_arrays(rec)

    for edge in (spec.low, spec.high):  # each bound of the accepted range, with the richest method
        if edge is not None:
            run = example(value=edge if spec.kind is float else int(edge), method=spec.methods[-1])(run)
    run = given(value=values, method=st.sampled_from(spec.methods))(run)
    settings(
        max_examples=10, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )(run)()


def check_finite_arrays(rec):
    """Every float array of the record is finite (subset_offset: -inf marks padding only)."""
    for key, v in rec.to_dict().items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            ok = np.isfinite(v) | ((v == -np.inf) if key == "subset_offset" else False)
            assert ok.all(), f"{key} at t={rec.t} is not finite"
