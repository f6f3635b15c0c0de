import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes caches under a temp dir, never the user's ~/.cache."""
    monkeypatch.setenv("GOLDDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def fresh_st_caches():
    """Streamlit caches cleared before and after an AppTest (they outlive a script run)."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


_COUNTER = itertools.count()


def structured_ds(N: int, H: int = 8, seed: int = 0, name: str = "structured"):
    """H x H images from a 4-factor tanh model plus noise: a posterior that concentrates. Each
    call gets its own dataset name, so caches never mix two of them."""
    from golddiff.data import Dataset

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, 4))
    A = rng.standard_normal((4, H * H))
    X = np.tanh(0.5 * z @ A + 0.2 * rng.standard_normal((N, H * H)))
    images = torch.tensor(X, dtype=torch.float32).reshape(N, 1, H, H)
    return Dataset(f"{name}-{next(_COUNTER)}", images, np.zeros(N, np.int64))


def streamlit_server(log_dir: Path):
    """`streamlit run app.py` on a free local port: yields its URL once it answers, stops it
    after (a generator for a fixture to `yield from`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(log_dir / "streamlit.log", "w")
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ))
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited: {(log_dir / 'streamlit.log').read_text()}")
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
