"""Browser test of the Explorer: the real `streamlit run app.py` server driven by Playwright + Debian Chromium.

The instant start (a finished run without pressing Run), moving the timestep slider with the keyboard and
timing how long the views take to follow (key press -> metrics and x_t image updated), Play / Pause, a
screenshot under the test's tmp dir; the link round trip; a visible error; one scenario.
Skipped when /usr/bin/chromium or playwright is missing (never runs `playwright install`).
"""

import json
import re
import time
from pathlib import Path

import pytest

from conftest import streamlit_server

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


@pytest.fixture
def server(tmp_path):
    yield from streamlit_server(tmp_path)


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

        t0 = time.perf_counter()  # instant start: no click, the finished run of the defaults shows
        page.get_by_text("Done: 10 steps in").wait_for(timeout=120_000)
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=60_000
        )
        page.wait_for_function(SHOWN_JS, arg=[999], timeout=60_000, polling=200)
        run_s = time.perf_counter() - t0
        assert page.evaluate(METRIC_JS, ["t (timestep)"]) == "999"
        k_first = page.evaluate(METRIC_JS, ["k_t (golden subset)"])

        slider = page.locator('[data-testid="stSlider"] input[type="range"]').first
        moves = []
        for t in (888, 777, 666):  # one step right at a time
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
        page.wait_for_function(SHOWN_JS, arg=[999], timeout=30_000, polling=100)
        page.wait_for_function(SHOWN_JS, arg=[777], timeout=30_000, polling=100)
        page.get_by_role("button", name="Pause").click()
        page.get_by_role("button", name="Play").wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        t_paused = page.evaluate(METRIC_JS, ["t (timestep)"])
        page.wait_for_timeout(1500)
        assert page.evaluate(METRIC_JS, ["t (timestep)"]) == t_paused and int(t_paused) <= 777
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


def launch(p):
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    return browser, browser.new_page(viewport={"width": 1400, "height": 2400})


def test_the_link_reproduces_the_view(server):
    """URL state: a link sets the sidebar and the step; moving the step writes it back, and
    reloading the written link shows the same view."""
    with sync_playwright() as p:
        browser, page = launch(p)
        page.goto(server + "?dataset=digits&seed=3&steps=4&k_min=40&t=333")
        page.wait_for_function(SHOWN_JS, arg=[333], timeout=120_000, polling=200)
        seed = page.get_by_label("Seed").input_value()
        assert seed == "3"
        assert "digits" in page.get_by_text("Samples with the sidebar settings").inner_text()
        slider = page.locator('[data-testid="stSlider"] input[type="range"]').first
        slider.focus()
        page.keyboard.press("End")
        page.wait_for_function(SHOWN_JS, arg=[0], timeout=30_000, polling="raf")
        page.wait_for_function("location.search.includes('t=0')", timeout=10_000)
        link = page.url
        for part in ("dataset=digits", "seed=3", "steps=4", "k_min=40", "t=0"):
            assert part in link, link
        page.goto(link)
        page.wait_for_function(SHOWN_JS, arg=[0], timeout=120_000, polling=200)
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()


def test_errors_are_visible_without_a_click(server):
    """Errors and a link's bad values: a red box in the main area, no status to open."""
    with sync_playwright() as p:
        browser, page = launch(p)
        page.goto(server + "?dataset=digits&k_min=170&k_max=100")
        box = page.locator('[data-testid="stMain"] [data-testid="stAlertContentError"]')
        box.first.wait_for(timeout=120_000)
        assert "k_min=170 is larger than k_max=100" in box.first.inner_text()
        assert box.first.is_visible()
        page.goto(server + "?dataset=digits&steps=abc")
        box.first.wait_for(timeout=120_000)
        assert "steps='abc'" in box.first.inner_text()
        browser.close()


def test_a_scenario_sets_the_sidebar_and_says_what_to_notice(server):
    with sync_playwright() as p:
        browser, page = launch(p)
        page.goto(server + "?dataset=digits")
        page.get_by_text("Done: 10 steps in").wait_for(timeout=120_000)
        page.get_by_text("Scenarios: one click").click()
        page.get_by_role("button", name="The random pool misses").click()
        page.get_by_text("sits on a single image").wait_for(timeout=120_000)
        page.wait_for_function(SHOWN_JS, arg=[222], timeout=120_000, polling=200)
        page.get_by_text("The golden subset missed the posterior").wait_for(timeout=30_000)
        assert "mnist-5k" in page.get_by_text("Samples with the sidebar settings").inner_text()
        # one screen: scrolled down to the galleries, the timestep slider is still in view
        page.set_viewport_size({"width": 1400, "height": 900})
        page.get_by_text(re.compile(r"^Exact posterior: top \d+$")).scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        box = page.locator('[data-testid="stSlider"]').first.bounding_box()
        assert box is not None and 0 <= box["y"] < 900 - box["height"], box
        browser.close()


def test_downloads_work_in_any_order_and_a_bad_value_is_a_sentence(server, tmp_path):
    """The lecturer's walkthrough: the GIF right after the .npz (and back), each a complete file;
    then 100000 samples typed into the sidebar gives a sentence instead of a silent red box."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
        page.goto(server + "?dataset=digits&steps=4")
        page.wait_for_function(SHOWN_JS, arg=[999], timeout=120_000, polling=200)
        npz = page.get_by_role("button", name="Run (.npz")
        gif = page.get_by_role("button", name="Animated GIF")
        got = []
        for button in (npz, gif, npz, gif):
            with page.expect_download(timeout=30_000) as info:
                button.click()
            path = tmp_path / info.value.suggested_filename
            info.value.save_as(path)
            got.append(path)
        assert [p.suffix for p in got] == [".npz", ".gif", ".npz", ".gif"]
        assert got[1].read_bytes()[:6] in (b"GIF87a", b"GIF89a")
        import golddiff

        assert len(golddiff.Trajectory.load(got[2]).records) == 4
        box = page.get_by_label("Samples")
        box.fill("100000")
        box.press("Enter")
        error = page.locator('[data-testid="stMain"] [data-testid="stAlertContentError"]')
        error.first.wait_for(timeout=30_000)
        assert "Samples" in error.first.inner_text()
        assert page.get_by_role("button", name="Run", exact=True).count() == 0
        browser.close()
