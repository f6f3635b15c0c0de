"""torch.distributed sampling (golddiff.run.distributed): 2 gloo ranks on the CPU must give what one
process gives, for --shard samples and --shard corpus, every pool and subset mode; a rank that
fails or hangs must stop the run with a clear error on rank 0, never a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT
from golddiff import DenoiserParams, Trajectory, load_dataset, make_denoiser, sample
from golddiff.cli import main

STEPS, N_SAMPLES, SEED = 10, 5, 7  # 5 samples: an uneven split over 2 ranks (2 + 3)
# (shard mode, pool, subset): every pool mode, and every subset mode, under --shard corpus
RUNS = [
    ("samples", "random", "schedule"),
    ("corpus", "random", "schedule"),
    ("corpus", "nearest", "schedule"),
    ("corpus", "auto", "schedule"),
    ("corpus", "auto", "adaptive"),
    ("corpus", "random", "local"),
]
# compared one step at a time: the adaptive draw counts are step functions of float sums, so
# round-off can part whole trajectories (the local screen breaks its ties by index: it need not)
STATEWISE = ("adaptive",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out: str, fail: str | None, timeout: float):
    """One rank: run every RUNS entry on digits and save rank 0's trajectories, or (fail) stop at
    step 2 on rank 1 by exiting or hanging; rank 0 writes the error it saw."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from golddiff.denoise.methods import denoiser_on
    from golddiff.run.distributed import PeerFailure, sample_sharded, session
    from golddiff.run.sharded import shard_corpus

    def stop(rec):
        if rank == 1 and rec.step == 2:
            if fail == "exit":
                os._exit(3)
            time.sleep(600)  # alive but silent: only the timeout can end rank 0's wait

    ds = load_dataset("digits")
    try:
        with session("cpu", timeout) as (comm, dev):
            for mode, pool, subset in RUNS[: 2 if fail else None]:
                if subset in STATEWISE:  # one step at each of one process's states
                    corpus = shard_corpus(ds, comm, dev)
                    params = DenoiserParams(pool=pool, subset=subset)
                    den = denoiser_on("golddiff", corpus, None, params)
                    traj = at_states(den, one_process(pool, subset))
                else:
                    traj = sample_sharded(
                        mode,
                        comm,
                        ds,
                        "golddiff",
                        DenoiserParams(pool=pool, subset=subset),
                        dev,
                        STEPS,
                        N_SAMPLES,
                        SEED,
                        exact_check=True,
                        callback=stop if fail else None,
                    )
                if rank == 0:
                    traj.save(os.path.join(out, f"{mode}-{pool}-{subset}.npz"))
    except PeerFailure as e:
        with open(os.path.join(out, f"error{rank}.txt"), "w") as f:
            f.write(str(e))


def spawn(tmp, fail=None, timeout=30.0) -> tuple[list, float]:
    """Two ranks as fresh interpreters running `worker` (not multiprocessing's spawn, which would
    re-run whatever __main__ this pytest process holds, e.g. a Streamlit page from AppTest)."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    code = "import sys; from test_distributed import main_worker; main_worker(sys.argv[1:])"
    args = [str(port), str(tmp), fail or "", str(timeout)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(r)] + args, env=env) for r in range(2)
    ]
    try:
        procs[0].wait(120)
    finally:
        elapsed = time.perf_counter() - start
        for p in procs[1:]:
            try:
                p.wait(1 if fail else 60)
            except subprocess.TimeoutExpired:  # the hanging rank of the failure test
                p.kill()
                p.wait()
    return [p.returncode for p in procs], elapsed


def main_worker(argv: list[str]) -> None:
    rank, port, out, fail, timeout = argv
    worker(int(rank), 2, int(port), out, fail or None, float(timeout))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    codes, _ = spawn(tmp)
    assert codes == [0, 0]
    return {run: Trajectory.load(tmp / ("-".join(run) + ".npz")) for run in RUNS}


def one_process(pool: str, subset: str) -> Trajectory:
    den = make_denoiser("golddiff", load_dataset("digits"), device="cpu", pool=pool, subset=subset)
    return sample(den, steps=STEPS, n=N_SAMPLES, seed=SEED, exact_check=True)


def at_states(den, ref: Trajectory) -> Trajectory:
    """One denoiser step at each state x_t of `ref`, with the sampler's seed streams and the exact
    check: the adaptive subset's draw counts are a step function of its error estimate, so over a
    whole trajectory float round-off between two summation orders can flip one and the runs part;
    at the same states both must agree."""
    from golddiff.denoise.streams import SampleStreams
    from golddiff.run.records import make_record

    corpus, p, records = den.corpus, den.params, []
    streams = SampleStreams(SEED, range(N_SAMPLES))
    for r in ref.records:
        x_t = torch.as_tensor(r.x_t).reshape(N_SAMPLES, -1)
        out = den.denoise(x_t, r.t, generator=streams)
        M = corpus.stats.mask(r.t, r.abar, p.mask_threshold, p.mask_rule)
        with torch.inference_mode():
            records.append(make_record(len(records), r.t, x_t, out, corpus, r.abar, p.temperature,
                                       32, M))
    meta = dict(ref.meta, world_size=corpus.comm.world)
    return Trajectory(records, records[-1].x0_hat, ref.x_T, meta)


def close(got, want, **tol) -> None:
    """Both absent (a field this method does not fill), or equal within tol."""
    assert (got is None) == (want is None)
    if want is not None:
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("run", RUNS, ids=["-".join(r) for r in RUNS])
def test_two_ranks_give_the_samples_and_diagnostics_of_one_process(runs, run):
    got, ref = runs[run], one_process(run[1], run[2])
    if run[2] in STATEWISE:
        den = make_denoiser("golddiff", load_dataset("digits"), device="cpu", pool=run[1],
                            subset=run[2])
        ref = at_states(den, ref)
    assert got.meta["world_size"] == 2 and got.meta["N"] == ref.meta["N"] == 1797
    assert got.samples.shape == ref.samples.shape
    np.testing.assert_allclose(got.x_T, ref.x_T, atol=0)  # each sample's own seed stream
    assert np.abs(got.samples - ref.samples).max() <= 1e-3
    for g, r in zip(got.records, ref.records):
        assert (g.t, g.m_t, g.k_t) == (r.t, r.m_t, r.k_t)
        close(g.k_b, r.k_b, atol=0)  # adaptive: the same draws, so the same distinct images
        close(g.subset_offset, r.subset_offset, atol=1e-4)
        np.testing.assert_allclose(g.x0_hat, r.x0_hat, atol=1e-3)
        # the golden subset: the same images (order among equal distances may differ); none on
        # a closed-form (Wiener) step
        assert (g.subset_idx is None) == (r.subset_idx is None) and g.method == r.method
        if r.subset_idx is not None:
            np.testing.assert_array_equal(np.sort(g.subset_idx, 1), np.sort(r.subset_idx, 1))
        np.testing.assert_array_equal(g.pool_nearest, r.pool_nearest)
        for f in ("entropy", "perplexity", "ess", "captured_mass", "recall", "error_est"):
            close(getattr(g, f), getattr(r, f), rtol=1e-4, atol=1e-5)
        for f in ("top_w", "ranked_w", "ranked_global_w", "ref_x0", "pixel_captured_mass"):
            close(getattr(g, f), getattr(r, f), atol=1e-4)
        close(g.onestep_r2, r.onestep_r2, atol=1e-4)
        close(g.pixel_entropy, r.pixel_entropy, atol=1e-3)
        # k_p counts images up to a mass that both sum in a different order: off by one at most
        assert np.abs(g.k90 - r.k90).max() <= 1 and np.abs(g.k99 - r.k99).max() <= 1
        clear = r.top_w[:, 0] > r.top_w[:, 1] + 1e-4  # a top-1 image that no round-off reorders
        np.testing.assert_array_equal(g.top_idx[clear, 0], r.top_idx[clear, 0])


def test_a_sample_does_not_depend_on_its_batch_or_its_position():
    den = make_denoiser("golddiff", load_dataset("digits"), device="cpu", pool="random")
    whole = sample(den, steps=4, n=5, seed=SEED)
    tail = sample(den, steps=4, n=2, seed=SEED, first=3)
    np.testing.assert_array_equal(tail.x_T, whole.x_T[3:])
    np.testing.assert_allclose(tail.samples, whole.samples[3:], atol=1e-5)
    for a, b in zip(tail.records, whole.records):
        np.testing.assert_array_equal(np.sort(a.subset_idx, 1), np.sort(b.subset_idx[3:], 1))


@pytest.mark.parametrize("fail", ["exit", "hang"])
def test_a_failing_rank_stops_the_run_with_a_clear_error_on_rank_0(tmp_path, fail):
    codes, elapsed = spawn(tmp_path, fail=fail, timeout=3.0)
    assert codes[0] == 0  # rank 0 caught the failure and returned
    msg = (tmp_path / "error0.txt").read_text()
    assert msg.startswith("rank 0: another rank failed, exited or did not answer within 3 s")
    assert elapsed < 40  # stopped by the timeout or the closed connection, not a hang
    assert not (tmp_path / "corpus-random-schedule.npz").exists()


def test_shard_outside_torchrun_is_a_one_sentence_error(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["sample", "--dataset", "digits", "--samples", "2", "--shard", "corpus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --shard needs a launch by torchrun") and "Traceback" not in err


def test_torchrun_cli_corpus_shard_writes_what_one_process_samples(tmp_path):
    """`sample` through torchrun itself with 2 CPU ranks (the README's command), against the
    library in this process."""
    out = tmp_path / "run.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(free_port()), "-m", "golddiff", "sample", "--dataset", "digits"]
    cmd += ["--shard", "corpus", "--samples", "3", "--steps", "6", "--seed", "2"]
    cmd += ["--pool", "nearest", "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("saved") == 0 and done.stdout.count("perplexity") == 1  # rank 0 only
    den = make_denoiser("golddiff", load_dataset("digits"), device="cpu", pool="nearest")
    ref = sample(den, steps=6, n=3, seed=2)
    assert np.abs(Trajectory.load(out).samples - ref.samples).max() <= 1e-3


def test_corpus_shard_refuses_an_approximate_or_faiss_screen():
    from golddiff.core.comm import Comm
    from golddiff.denoise.corpus import Corpus
    from golddiff.denoise.methods import denoiser_on

    class TwoRanks(Comm):  # what the denoiser sees of a corpus split across two ranks
        world = 2

    corpus = Corpus(load_dataset("digits"), torch.device("cpu"), comm=TwoRanks())
    with pytest.raises(ValueError, match="choose --backend torch"):
        denoiser_on("golddiff", corpus, None, DenoiserParams(backend="faiss-ivf"))


def test_torchrun_bench_reports_ms_per_step_and_the_bytes_the_merge_needs(tmp_path):
    """bench --shard corpus with 2 ranks: the full-scan PCA step sends exactly the per-pixel max
    (B, D) and the sums s0, s1, sx (B, 3 D) in float32, 16 B D bytes; Wiener sends nothing."""
    out, B = tmp_path / "bench.json", 3
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(free_port()), "-m", "golddiff", "bench", "--dataset", "digits"]
    cmd += ["--shard", "corpus", "--methods", "pca,wiener", "--samples", str(B), "--steps", "2"]
    cmd += ["--json", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    js = json.loads(out.read_text())
    assert js["meta"]["world_size"] == 2 and "ms/step" in done.stdout
    pca, wiener = js["methods"]["pca"], js["methods"]["wiener"]
    assert pca["ms_per_step"] > 0 and wiener["ms_per_step"] > 0
    assert pca["bytes_per_step"]["denoise"] == 16 * B * 64  # digits: D = 64
    assert wiener["bytes_per_step"].get("denoise", 0) == 0
