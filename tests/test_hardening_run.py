"""Probes on the run side: the golden subset under the memory guard, the CLI's early checks
(parameters, seed, device, output paths) and quiet Ctrl-C, and shared caches under threads."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import golddiff
from golddiff.cli import main
from golddiff.data import Dataset
from golddiff.data.memory import USER_LIMIT, set_max_memory
from golddiff.denoise import corpus as corpus_mod
from golddiff.denoise import methods, retrieval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def reset():
    yield
    USER_LIMIT.bytes = None
    corpus_mod.CORPORA.clear()


def rand_ds(N=2000, side=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, 1, side, side, generator=g) * 2 - 1
    return Dataset(f"rand{N}-{side}-{seed}", x, np.zeros(N, np.int64))


# ----------------------------------------------------------------------------- memory guard


def test_golden_subset_is_refused_before_pool_screen_or_gather(monkeypatch):
    den = golddiff.make_denoiser("golddiff", rand_ds(), device="cpu", k_min=500, k_max=1000)
    fail = lambda *a, **k: pytest.fail("allocated before the memory check")  # noqa: E731
    monkeypatch.setattr(methods.GoldDiffDenoiser, "draw_pool", fail)
    monkeypatch.setattr(methods, "fine_select", fail)
    # 64 samples x ~1000 images x 784 pixels x 4 bytes is ~200 MB for the subset alone
    set_max_memory("100MB")
    with pytest.raises(ValueError, match=r"golden subset.*max_memory limit of 100\.0 MB"):
        golddiff.sample(den, steps=2, n=64, seed=0)


def test_fine_select_gathers_in_bounded_blocks(monkeypatch):
    monkeypatch.setattr(retrieval, "BLOCK_ELEMS", 1000)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(200, 10, generator=g)
    x_t = torch.randn(8, 10, generator=g)
    cand = torch.stack([torch.randperm(200, generator=g)[:20] for _ in range(8)])  # (8, 20)
    seen = []
    real = retrieval.gathered_sq_dists

    def spy(q, X_, sq, idx, scale):
        seen.append(idx.shape[0] * idx.shape[1] * X_.shape[1])
        return real(q, X_, sq, idx, scale)

    monkeypatch.setattr(retrieval, "gathered_sq_dists", spy)
    got = retrieval.fine_select(x_t, X, X.square().sum(1), cand, 0.5, 5)
    assert seen and max(seen) <= 1000
    d = ((x_t[:, None, :] - 0.5 * X[cand]) ** 2).sum(-1)  # (8, 20) by the plain formula
    want = cand.gather(1, d.topk(5, dim=1, largest=False).indices)
    assert torch.equal(got.sort(1).values, want.sort(1).values)


# ----------------------------------------------------------------------------- CLI


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


@pytest.fixture
def no_loading(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("data loaded before the arguments were checked")

    monkeypatch.setattr(golddiff, "load_dataset", fail)


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["sample", "--steps", "0"], "steps=0"),
        (["sample", "--device", "meta"], "Unknown device 'meta'"),
        (["sample", "--seed", str(2**64)], "--seed="),
        (["sample", "--seed", "-1"], "0..9223372036854775807"),
        (["sample", "--k-min", "900", "--k-max", "10"], "k_min=900 is larger than k_max=10"),
        (["bench", "--k-min", "900", "--k-max", "10"], "k_min=900 is larger than k_max=10"),
        (["sample", "--temperature", "0"], "temperature=0"),
        (["sample", "--out", "/no/such/folder/x.npz"], "does not exist"),
        (["bench", "--json", "/no/such/folder/x.json"], "--json"),
        (["bench", "--frontier", "--json", "/no/such/folder/x.json"], "--json"),
        (["bench", "--shard", "corpus", "--json", "/no/such/folder/x.json"], "--json"),
        (["bench", "--shard", "corpus", "--methods", "pca,nope"], "Unknown method 'nope'"),
        (["bench", "--frontier", "--frontier-tolerances", "0.1,x"], "--frontier-tolerances"),
        (["bench", "--frontier", "--frontier-k-max", "0"], "--frontier-k-max"),
        (["bench", "--frontier", "--frontier-local-k-max", "0"], "--frontier-local-k-max"),
        (["bench", "--frontier", "--seeds", "0,0"], "--seeds"),
        (["bench", "--frontier", "--seeds", "a"], "--seeds"),
        (["bench", "--sizes", "100,abc"], "--sizes"),
        (["sample", "--shard", "corpus", "--steps", "0"], "steps=0"),
        (["sample", "--shard", "samples", "--timeout", "-1"], "--timeout"),
    ],
)
def test_cli_checks_arguments_before_loading_data(argv, fragment, capsys, no_loading):
    assert main(argv + ["--dataset", "folder:/nowhere"]) == 2
    assert fragment in last_error(capsys)


def test_cli_out_onto_a_folder_is_refused_up_front(tmp_path, capsys, no_loading):
    assert main(["sample", "--out", str(tmp_path)]) == 2
    assert "is a folder" in last_error(capsys)


def test_cli_write_failure_at_the_end_is_one_error_line(tmp_path, capsys, monkeypatch):
    from golddiff.data import files

    def disk_full(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "atomic_write", disk_full)
    out = tmp_path / "t.npz"
    argv = ["--dataset", "digits", "--steps", "1", "--n", "1", "--device", "cpu"]
    assert main(["sample", *argv, "--out", str(out)]) == 2
    assert "No space left on device" in last_error(capsys) and not out.exists()
    assert main(["bench", *argv, "--methods", "wiener", "--json", str(tmp_path / "b.json")]) == 2
    assert "--json" in last_error(capsys)


def test_ctrl_c_while_torch_imports_exits_130_quietly(tmp_path):
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise KeyboardInterrupt\n")  # Ctrl-C inside 'import torch'
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    r = subprocess.run(
        [sys.executable, "-m", "golddiff", "info"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr


# ----------------------------------------------------------------------------- shared caches


def test_corpus_builds_a_proxy_index_once_under_concurrent_calls(monkeypatch):
    c = golddiff.get_corpus(rand_ds(N=300, side=8), "cpu")
    built = []
    real = corpus_mod.ProxyIndex

    def slow(*a, **k):
        built.append(1)
        time.sleep(0.2)
        return real(*a, **k)

    monkeypatch.setattr(corpus_mod, "ProxyIndex", slow)
    out, errors = [], []

    def worker():
        try:
            out.append(c.proxy(4, "torch", None))
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(built) == 1 and all(o is out[0] for o in out)


def test_corpus_statistics_are_computed_once_under_concurrent_calls(monkeypatch):
    c = golddiff.get_corpus(rand_ds(N=300, side=8, seed=5), "cpu")
    calls = []
    real = corpus_mod.DataStats.from_data

    def slow(X):
        calls.append(1)
        time.sleep(0.2)
        return real(X)

    monkeypatch.setattr(corpus_mod.DataStats, "from_data", staticmethod(slow))
    got = []
    threads = [threading.Thread(target=lambda: got.append(c.stats)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 4 and all(s is got[0] for s in got)


def test_mask_cache_and_patterns_survive_concurrent_sessions(monkeypatch):
    from golddiff.core import logits, stats

    den = golddiff.make_denoiser("pca", rand_ds(N=200, side=8, seed=7), device="cpu")
    monkeypatch.setattr(stats, "MASK_CACHE_BYTES", 3 * 4 * 64 * 64)  # 3 masks: constant eviction
    errors = []

    def session(offset):
        try:
            for t in range(offset, 1000, 37):
                M = den.corpus.stats.mask(t, den.schedule.abar(t), 0.02)
                logits.MASK_PATTERNS.get(M)
        except Exception as e:  # noqa: BLE001 - any error fails the test
            errors.append(e)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_diagnostics_memory_is_refused_before_the_first_step(monkeypatch):
    den = golddiff.make_denoiser("wiener", rand_ds(N=2000, side=8, seed=9), device="cpu")
    monkeypatch.setattr(
        den, "denoise", lambda *a, **k: pytest.fail("a step ran before the memory check")
    )
    set_max_memory("1MB")  # 8 x 64 x 2000 x 4 bytes = 4.1 MB of diagnostics
    with pytest.raises(ValueError, match=r"\(64, 2000\) global posterior.*lower --n"):
        golddiff.sample(den, steps=2, n=64, seed=0)


def test_cli_out_on_a_read_only_filesystem_is_refused_up_front(tmp_path, capsys, monkeypatch):
    import pathlib

    def read_only(self, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", read_only)
    monkeypatch.setattr(golddiff, "load_dataset", lambda *a, **k: pytest.fail("loaded data"))
    assert main(["sample", "--out", str(tmp_path / "t.npz")]) == 2
    assert "Read-only file system" in last_error(capsys)
