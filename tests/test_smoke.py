import subprocess
import sys

from conftest import ROOT


def test_cli_sample_runs_on_digits():
    r = subprocess.run(
        [sys.executable, "-m", "golddiff", "sample", "--dataset", "digits", "--n", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 + 10 and lines[2].split()[0] == "999" and lines[-1].split()[0] == "0"


def test_cli_unknown_dataset_is_one_sentence():
    r = subprocess.run(
        [sys.executable, "-m", "golddiff", "sample", "--dataset", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "mnist-5k" in r.stderr
