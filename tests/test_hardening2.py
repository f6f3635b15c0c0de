"""Second hardening round: what a kill -9 leaves (cache orphans, output temps) is swept on the next
run; outputs are regular files only and fit the disk; memory limits that round to 0 bytes; the
published mask's covariance path; the app's downloads.

A kill -9 is simulated in a fresh interpreter that patches os.replace to SIGKILL itself at a chosen
rename, so it dies there with no clean-up, exactly as a killed process would."""

from __future__ import annotations

import os
import signal
import socket
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from golddiff import data
from golddiff.data import cache, cached_arrays, files
from golddiff.data.memory import ENV_VAR, USER_LIMIT, max_memory, parse_bytes, set_max_memory


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    cache.VERIFIED.clear()
    yield
    USER_LIMIT.bytes = None
    cache.SWEEP.note = None


def dead_pid() -> int:
    """The pid of a process that has exited (forked and reaped)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def arrays_dir() -> Path:
    return data.cache_dir() / "arrays"


def next_run(key="unit/next-run"):
    """A new process's first cache access: the start-up sweep runs, reporting through a list."""
    notes: list[str] = []
    cache.SWEEP.done, cache.SWEEP.note = False, notes.append
    cached_arrays(key, lambda: {"x": np.zeros(3)})
    return notes


# ----------------------------------------------------------------------------- memory limits


@pytest.mark.parametrize("spec", [0.5, "0.5", "0.4B", "1e-10GB", "0.0001 kB"])
def test_memory_limits_that_round_to_zero_bytes_are_refused_like_zero(spec, monkeypatch):
    with pytest.raises(ValueError, match="positive memory size"):
        parse_bytes(0)
    with pytest.raises(ValueError, match="positive memory size"):
        parse_bytes(spec)
    with pytest.raises(ValueError, match="--max-memory"):
        set_max_memory(spec)
    monkeypatch.setenv(ENV_VAR, str(spec))
    with pytest.raises(ValueError, match=ENV_VAR):
        max_memory()
    assert parse_bytes("1B") == 1 and parse_bytes(1.5) == 1  # one byte is the smallest limit


def test_cli_refuses_a_max_memory_that_rounds_to_zero(capsys):
    from golddiff.cli import main

    assert main(["sample", "--dataset", "digits", "--max-memory", "0.5", "--steps", "1"]) == 2
    assert "positive memory size" in capsys.readouterr().err


# ----------------------------------------------------------------------------- cache crash leftovers


def two_arrays():
    return {"a": np.arange(4000.0), "b": np.ones((50, 50), np.float32)}


# A fresh interpreter forks one child per rename of a two-array cache build (array a, array b, the
# manifest); each child SIGKILLs itself just before its n-th rename, building the key unit/killed-n.
KILLED_BUILDS = """
import os, signal
import numpy as np
from golddiff.data import cache
cache.SWEEP.done = True  # the children must not sweep each other's leftovers
real = os.replace
for n in (1, 2, 3):
    pid = os.fork()  # nothing but this thread runs yet: safe to fork
    if pid == 0:
        seen = [0]
        def replace(src, dst, *a, **kw):
            seen[0] += 1
            if seen[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *a, **kw)
        os.replace = replace
        arrays = {"a": np.arange(4000.0), "b": np.ones((50, 50), np.float32)}
        cache.cached_arrays(f"unit/killed-{n}", lambda: arrays)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(n, os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)
"""


def test_kill_at_every_rename_of_a_cache_build_leaves_nothing_after_the_next_run():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", KILLED_BUILDS], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.stdout.split() == ["1", "True", "2", "True", "3", "True"], done.stderr[-500:]
    slugs = [cache._slug(f"unit/killed-{n}") for n in (1, 2, 3)]
    left = {s: [p.name for p in arrays_dir().glob(f"{s}.*") if p.suffix != ".lock"] for s in slugs}
    for s in slugs:  # each crash left files but no entry
        assert left[s] and f"{s}.json" not in left[s], left
    assert any(n.endswith(".a.npy") for n in left[slugs[1]])  # an orphan under its final name
    notes = next_run()
    assert not [p for s in slugs for p in arrays_dir().glob(f"{s}.*") if p.suffix != ".lock"]
    total = sum(len(v) for v in left.values())
    assert len(notes) == 1 and f"Removed {total} files" in notes[0] and "freed" in notes[0]
    got = cached_arrays("unit/killed-3", two_arrays)  # the entry builds and loads normally
    np.testing.assert_array_equal(got["a"], two_arrays()["a"])


def test_orphans_beside_a_valid_entry_are_removed_and_the_entry_kept():
    key = "unit/rebuilt"
    cached_arrays(key, two_arrays)
    slug = cache._slug(key)
    orphan = arrays_dir() / f"{slug}.{dead_pid()}-0123abcd.a.npy"
    np.save(orphan, np.zeros(10000))
    half = arrays_dir() / f"{slug}.json.{dead_pid()}-4567cdef.tmp"
    half.write_text("{")
    listed = {p.name for p in arrays_dir().glob(f"{slug}.*.npy")} - {orphan.name}
    notes = next_run()
    assert not orphan.exists() and not half.exists()
    assert {p.name for p in arrays_dir().glob(f"{slug}.*.npy")} == listed
    assert "Removed 2 files" in notes[0]
    cache.VERIFIED.clear()
    np.testing.assert_array_equal(cached_arrays(key, two_arrays)["b"], two_arrays()["b"])


def test_files_of_an_entry_being_built_are_kept():
    key = "unit/in-flight"
    arrays_dir().mkdir(parents=True, exist_ok=True)
    slug = cache._slug(key)
    fresh = arrays_dir() / f"{slug}.{os.getpid()}-89abcdef.a.npy"  # renamed, manifest not yet
    np.save(fresh, np.zeros(5))
    with cache._build_lock(key):  # a builder at work (another open file: flock conflicts)
        assert next_run() == []
    assert fresh.exists()


def test_nothing_outside_the_entry_files_is_touched():
    arrays_dir().mkdir(parents=True, exist_ok=True)
    mine = [arrays_dir() / "notes.txt", arrays_dir() / "data.npy", data.cache_dir() / "x.npy"]
    for p in mine:
        p.write_bytes(b"keep")
    outside = Path(tempfile.mkdtemp()) / "victim.a.npy"
    outside.write_bytes(b"keep")
    (arrays_dir() / f"{cache._slug('k')}.{dead_pid()}-0123abcd.a.npy").symlink_to(outside)
    next_run()
    assert all(p.read_bytes() == b"keep" for p in mine + [outside])


@pytest.mark.parametrize("sub,name", [("faiss", "x.index"), ("umap", "m.npz"), ("tmp", "decoded.npy")])
def test_temps_of_a_dead_writer_in_a_cache_folder_go_at_once_a_live_ones_stay(sub, name):
    folder = data.cache_dir() / sub
    folder.mkdir(parents=True)
    dead = folder / files.temp_name(folder / name).name.replace(
        f".{os.getpid()}@", f".{dead_pid()}@"
    )
    live = files.temp_name(folder / "y.index")  # this process: a writer that still runs
    for p in (dead, live):
        p.write_bytes(b"\0" * 2048)
    notes = next_run()
    assert not dead.exists() and live.exists()
    assert "Removed 1 file " in notes[0] and "2.0 kB" in notes[0]


# ----------------------------------------------------------------------------- output temps


def output_temp(out: Path, pid: int, nested: bool = False) -> Path:
    """A temp named as this project names the temps of `out` (and of a temp, when nested)."""
    t = files.temp_name(out).name.replace(f".{os.getpid()}@", f".{pid}@")
    if nested:
        t = files.temp_name(out.with_name(t)).name.replace(f".{os.getpid()}@", f".{pid}@")
    return out.with_name(t)


def test_stale_temps_of_the_output_are_swept_and_nothing_else(tmp_path):
    out = tmp_path / "run.npz"
    gone = [output_temp(out, dead_pid()), output_temp(out, dead_pid(), nested=True)]
    kept = [
        output_temp(out, os.getppid()),  # a writer that still runs
        output_temp(tmp_path / "other.npz", dead_pid()),  # another output's
        tmp_path / "mine.tmp",  # the user's own file
        tmp_path / ".run.npz.tmp",  # not a name this project writes
    ]
    for p in gone + kept:
        p.write_bytes(b"\0" * 1000)
    notes: list[str] = []
    assert files.check_writable(out, "--out", note=notes.append) == out
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
    assert notes == [f"Removed 2 files left by killed writers in {tmp_path} (2.0 kB freed)."]


def sample_argv(out):
    return ["sample", "--dataset", "digits", "--method", "wiener", "--steps", "1", "--samples", "1",
            "--out", str(out)]  # fmt: skip


# A fresh interpreter that runs the CLI and SIGKILLs itself just before its n-th rename into the
# output's folder (a forked pytest could deadlock in torch's thread pool).
KILLED_CLI = """
import os, signal, sys
from pathlib import Path
n, folder, argv = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
real, seen = os.replace, [0]
def replace(src, dst, *a, **kw):
    if Path(dst).parent == folder:
        seen[0] += 1
        if seen[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)
os.replace = replace
from golddiff.cli import main
main(argv)
"""


@pytest.mark.parametrize("n", [1, 2])  # the trajectory's own temp, then the output itself
def test_kill_at_every_rename_of_sample_out_is_swept_by_the_next_run(tmp_path, n, capsys):
    import subprocess
    import sys

    from golddiff.cli import main

    out = tmp_path / "outputs" / "run.npz"
    out.parent.mkdir()
    assert main(sample_argv(out)) == 0  # the old output; the statistics are cached now
    old = out.read_bytes()
    root = Path(__file__).resolve().parents[1]
    child = [sys.executable, "-c", KILLED_CLI, str(n), str(out.parent), *sample_argv(out)]
    done = subprocess.run(child, cwd=root, capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-500:]
    assert out.read_bytes() == old and len(list(out.parent.glob(".*.tmp"))) >= 1
    capsys.readouterr()
    assert main(sample_argv(out)) == 0
    assert list(out.parent.iterdir()) == [out]
    assert "note: Removed" in capsys.readouterr().err


# ----------------------------------------------------------------------------- output kinds


def fifo(folder: Path) -> Path:
    p = folder / "pipe"
    os.mkfifo(p)
    return p


def unix_socket(folder: Path) -> Path:
    p = folder / "s"
    if len(str(p)) > 100:  # a socket's path is limited to ~108 bytes
        p = Path(tempfile.mkdtemp(dir="/tmp")) / "s"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()
    return p


def link_to(target: str):
    def make(folder: Path) -> Path:
        p = folder / "link.npz"
        p.symlink_to(target)
        return p

    return make


SPECIAL = {
    "device": lambda folder: Path("/dev/null"),
    "fifo": fifo,
    "socket": unix_socket,
    "link to a device": link_to("/dev/null"),
    "dangling link": link_to("/nonexistent/nothing.npz"),
}


@pytest.mark.parametrize("kind", list(SPECIAL))
def test_an_output_that_is_not_a_regular_file_is_refused_before_the_run(kind, tmp_path, monkeypatch):
    import golddiff
    from golddiff.cli import main

    path = SPECIAL[kind](tmp_path)
    before = os.lstat(path)

    def no_load(*a, **kw):
        raise AssertionError("the dataset was loaded before the output was checked")

    monkeypatch.setattr(golddiff, "load_dataset", no_load)
    with pytest.raises(ValueError, match="not a regular file|does not exist"):
        files.check_writable(path, "--out")
    assert main(["sample", "--dataset", "digits", "--out", str(path)]) == 2
    assert main(["bench", "--dataset", "digits", "--methods", "wiener", "--json", str(path)]) == 2
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino, after.st_dev) == (before.st_mode, before.st_ino, before.st_dev)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_an_output_that_turns_special_during_the_write_is_not_replaced(tmp_path):
    out = tmp_path / "out.npz"

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"new")
        os.mkfifo(out)  # appears while the output is being written

    with pytest.raises(ValueError, match="FIFO"):
        files.write_output(out, write, "--out")
    assert stat.S_ISFIFO(os.lstat(out).st_mode) and list(tmp_path.iterdir()) == [out]


def test_a_symlink_to_a_regular_file_is_written_through(tmp_path):
    target = tmp_path / "real" / "run.npz"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    assert files.check_writable(link, "--out") == target
    files.write_output(link, lambda tmp: tmp.write_bytes(b"new"), "--out")
    assert link.is_symlink() and link.resolve() == target and target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.npz"]


# ----------------------------------------------------------------------------- free space


def tiny_disk(monkeypatch, free: int) -> None:
    real = os.statvfs

    class Vfs:
        def __init__(self, st):
            self.f_frsize, self.f_bavail = 1, free

    monkeypatch.setattr(os, "statvfs", lambda p: Vfs(real(p)))


def test_free_space_is_checked_against_the_output_size(tmp_path, monkeypatch):
    tiny_disk(monkeypatch, 10_000)
    files.check_free_space(tmp_path / "a.npz", 10_000, "--out")
    with pytest.raises(ValueError, match="--out .* needs at least 10.0 kB .* 10.0 kB free"):
        files.check_free_space(tmp_path / "a.npz", 10_001, "--out")


def test_sample_out_on_a_full_disk_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    import golddiff.run.sampler as sampler
    from golddiff.cli import main

    def no_run(*a, **kw):
        raise AssertionError("the run started on a disk too small for its output")

    tiny_disk(monkeypatch, 1000)  # 1 kB free; 2 steps x 4 samples x 64 pixels of noisy states
    monkeypatch.setattr(sampler, "sample", no_run)
    import golddiff

    monkeypatch.setattr(golddiff, "sample", no_run)
    argv = ["sample", "--dataset", "digits", "--method", "wiener", "--steps", "2", "--samples",
            "4", "--out", str(tmp_path / "a.npz")]  # fmt: skip
    assert main(argv) == 2
    assert "free" in capsys.readouterr().err and not (tmp_path / "a.npz").exists()


# ----------------------------------------------------------------------------- the published mask


def test_published_mask_equals_the_official_float32_construction_on_mnist_5k():
    import torch
    from reference import official_alphas_cumprod, official_covariance_svd, official_mask

    from golddiff import load_dataset, make_denoiser

    ds = load_dataset("mnist-5k")
    den = make_denoiser("pca", ds, device="cpu", mask_rule="published", mask_threshold=0.02)
    svd = official_covariance_svd(ds.flat().float().contiguous())
    abars = official_alphas_cumprod()
    for t in (900, 500, 300, 200, 100, 0):
        want = official_mask(svd, abars[t], 0.02)
        got = den.mask(t, den.schedule.abar(t))
        assert torch.equal(got, want), f"t={t}: {int((got != want).sum())} entries differ"


def test_published_rule_needs_the_images():
    import torch

    from golddiff.core.stats import DataStats

    X = torch.randn(50, 4)
    st = DataStats.from_data(X)
    bare = DataStats(st.mean, st.eigvals, st.eigvecs, 50)  # statistics without their data
    assert torch.equal(bare.mask(10, 0.9, 0.0, "published"), torch.ones(4, 4))
    with pytest.raises(ValueError, match="published"):
        bare.mask(10, 0.9, 0.02, "published")
    assert st.mask(10, 0.9, 0.02, "published").shape == (4, 4)


# ----------------------------------------------------------------------------- the app's downloads


def test_each_download_button_serves_a_stored_file_with_the_runs_bytes(monkeypatch, tmp_path):
    """The bytes behind each button are in the media store when the page is drawn (never made on
    the click, so no click can find a deferred file missing), and they are the run itself."""
    import streamlit as st
    import streamlit.testing.v1.app_test as app_test
    from apptest import explorer_traj, ok, open_app
    from PIL import Image

    from golddiff.run.sampler import Trajectory

    stores = []

    class Recorded(app_test.MemoryMediaFileStorage):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recorded)
    st.cache_data.clear()
    at = open_app("explorer", {"dataset": "digits", "steps": "3"})
    ok(at)
    protos = {d.proto.id.rsplit("-", 1)[-1]: d.proto for d in at.get("download_button")}
    assert set(protos) == {"ex_dl_npz", "ex_dl_gif"}
    content = {}
    for key in ("ex_dl_npz", "ex_dl_gif", "ex_dl_npz"):  # any order, twice
        assert not protos[key].deferred_file_id
        file_id = protos[key].url.rsplit("/", 1)[-1].split(".")[0]
        content[key] = stores[-1].get_file(file_id).content
    (tmp_path / "run.npz").write_bytes(content["ex_dl_npz"])
    np.testing.assert_array_equal(
        Trajectory.load(tmp_path / "run.npz").samples, explorer_traj(at).samples
    )
    (tmp_path / "run.gif").write_bytes(content["ex_dl_gif"])
    with Image.open(tmp_path / "run.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames >= 3  # one frame per step at least
    st.cache_data.clear()
