"""Browser test of the Explorer: the real `streamlit run app.py` server driven by Playwright + Debian Chromium.

Press Run, wait for the plots, move the timestep slider with the keyboard, time how long the views take to
follow (key press -> metrics and x_t image updated), save a screenshot under the test's tmp dir.
Skipped when /usr/bin/chromium or playwright is missing (never runs `playwright install`).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited: {(tmp_path / 'streamlit.log').read_text()}")
            time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


METRIC_JS = """([label]) => {
  for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
    const l = m.querySelector('[data-testid="stMetricLabel"]');
    if (l && l.innerText.trim() === label) return m.querySelector('[data-testid="stMetricValue"]').innerText.trim();
  }
  return null;
}"""
# the views have followed the slider: the metric shows t and the x_t panel's title names the same t
SHOWN_JS = (
    """([t]) => {
  const v = ("""
    + METRIC_JS
    + """)(["t (timestep)"]);
  const titles = [...document.querySelectorAll('.js-plotly-plot .annotation-text')].map(e => e.textContent);
  return v === String(t) && titles.some(s => s.includes('(t = ' + t + ')'));
}"""
)


def test_run_scrub_and_screenshot(server, tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 3000})
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_text("Run settings").wait_for(timeout=90_000)
        page.get_by_text("Device: ").wait_for(timeout=30_000)

        t0 = time.perf_counter()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Done: 10 steps in").wait_for(timeout=120_000)
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=60_000
        )
        run_s = time.perf_counter() - t0
        assert page.evaluate(METRIC_JS, ["t (timestep)"]) == "900"
        k_first = page.evaluate(METRIC_JS, ["k_t (golden subset)"])

        slider = page.locator('[data-testid="stSlider"] input[type="range"]').first
        moves = []
        for t in (800, 700, 600):  # one step right at a time
            slider.focus()
            s = time.perf_counter()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(SHOWN_JS, arg=[t], timeout=30_000, polling="raf")
            moves.append(time.perf_counter() - s)
        slider.focus()
        s = time.perf_counter()
        page.keyboard.press("End")  # jump to the last step
        page.wait_for_function(SHOWN_JS, arg=[0], timeout=30_000, polling="raf")
        moves.append(time.perf_counter() - s)

        k_last = page.evaluate(METRIC_JS, ["k_t (golden subset)"])
        assert int(k_last.replace(",", "")) < int(k_first.replace(",", ""))
        page.get_by_text("Memorization check").wait_for(timeout=30_000)

        # Play from the last step restarts at the noisiest one and advances by itself; Pause stops it
        page.get_by_role("button", name="Play").click()
        page.wait_for_function(SHOWN_JS, arg=[900], timeout=30_000, polling=100)
        page.wait_for_function(SHOWN_JS, arg=[700], timeout=30_000, polling=100)
        page.get_by_role("button", name="Pause").click()
        page.get_by_role("button", name="Play").wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        t_paused = page.evaluate(METRIC_JS, ["t (timestep)"])
        page.wait_for_timeout(1500)
        assert page.evaluate(METRIC_JS, ["t (timestep)"]) == t_paused and int(t_paused) <= 700
        slider.focus()
        page.keyboard.press("End")
        page.wait_for_function(SHOWN_JS, arg=[0], timeout=30_000, polling="raf")
        assert page.get_by_text("Run settings").is_visible()  # app.py's sidebar survives reruns
        assert page.locator('[data-testid="stException"]').count() == 0
        page.wait_for_timeout(500)
        shot = tmp_path / "explorer.png"
        page.screenshot(path=str(shot))
        browser.close()
    timings = {
        "run_s": run_s,
        "slider_moves_s": moves,
        "slider_median_s": sorted(moves)[len(moves) // 2],
    }
    (tmp_path / "timings.json").write_text(json.dumps(timings, indent=1))
    print("screenshot:", shot, "timings:", timings)
    assert shot.stat().st_size > 10_000
    assert max(moves) < 5, timings  # generous bound on a busy 2-core CI box
