"""Browser test of the Explorer as a lecturer uses it: the real `streamlit run app.py` server in
Debian Chromium at 1280x720 (a projector). One screen holds the slider, the curves and x0_hat;
nothing is marked MISSED where the posterior is flat; the guided tour moves the step and keeps
its stop in the link; the pixel-source map says what the run's data say. Expectations come from
the same run computed here (the default settings are deterministic), never from fixed copy.
Skipped when /usr/bin/chromium or playwright is missing (never runs `playwright install`).
"""

from pathlib import Path

import pytest

from conftest import streamlit_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
VIEW = {"width": 1280, "height": 720}
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

# the views follow the slider: the x_t panel's title names this t
AT_T = """([t]) => [...document.querySelectorAll('.st-key-ex_images .annotation-text')]
  .some(e => e.textContent.includes('(t = ' + t + ')'))"""
BOX_JS = """(sel) => { const e = document.querySelector(sel); if (!e) return null;
  const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, height: r.height}; }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free local port, for this module's tests."""
    yield from streamlit_server(tmp_path_factory.mktemp("lecture"))


@pytest.fixture(scope="module")
def default_run():
    """The run the app shows on a first visit, computed here with the same defaults."""
    import golddiff

    data = golddiff.load_dataset("mnist-5k")
    traj = golddiff.sample(golddiff.make_denoiser("golddiff", data, device="cpu"), steps=10,
                           n=4, seed=0)
    return data, traj


def open_explorer(p, url: str):
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport=VIEW)
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text("Done: ").first.wait_for(timeout=180_000)
    page.wait_for_selector(".st-key-ex_images .js-plotly-plot", timeout=60_000)
    return browser, page


def to_controls(page) -> None:
    """Scroll the page (as a lecturer would, with the wheel over the main area) until the sticky
    controls reach the top."""
    page.mouse.move(VIEW["width"] * 0.6, VIEW["height"] * 0.6)
    box = page.evaluate(BOX_JS, ".st-key-ex_controls")
    page.mouse.wheel(0, box["top"] - 60)
    page.wait_for_timeout(1200)


def inside(box, what: str) -> None:
    assert box is not None, f"{what} is not on the page"
    assert 0 <= box["top"] and box["bottom"] <= VIEW["height"] and box["height"] > 20, (what, box)


def page_text(page) -> str:
    """The page's text and the text drawn inside its charts (tile captions, titles)."""
    return page.evaluate("""() => document.body.innerText + '\\n' +
      [...document.querySelectorAll('.js-plotly-plot text')].map(e => e.textContent).join('\\n')""")


def test_one_projector_screen_and_no_miss_at_t999(server, default_run, tmp_path):
    data, traj = default_run
    with sync_playwright() as p:
        browser, page = open_explorer(p, server)
        page.wait_for_function(AT_T, arg=[traj.records[0].t], timeout=60_000)
        assert float(traj.records[0].perplexity[0]) > traj.records[0].k_t  # a flat posterior
        assert "MISSED" not in page_text(page)
        to_controls(page)
        inside(page.evaluate(BOX_JS, '[data-testid="stSlider"]'), "the timestep slider")
        inside(page.evaluate(BOX_JS, ".st-key-ex_entropy .js-plotly-plot"), "the entropy curve")
        inside(page.evaluate(BOX_JS, ".st-key-ex_support .js-plotly-plot"), "the support curve")
        x0 = '.st-key-ex_images .nsewdrag[data-subplot="x2y2"]'  # the x0_hat panel
        inside(page.evaluate(BOX_JS, x0), "the x0_hat image")
        page.screenshot(path=str(tmp_path / "one_screen.png"))
        # scrubbing keeps it one screen: the last step, still all in view
        page.locator('[data-testid="stSlider"] input[type="range"]').first.focus()
        page.keyboard.press("End")
        page.wait_for_function(AT_T, arg=[traj.records[-1].t], timeout=60_000)
        for sel in ('[data-testid="stSlider"]', ".st-key-ex_support .js-plotly-plot", x0):
            inside(page.evaluate(BOX_JS, sel), sel)
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()


def test_the_tour_moves_the_step_and_lives_in_the_link(server, default_run):
    from golddiff.explore import tour

    data, traj = default_run
    route = tour.stops(traj, 0)
    with sync_playwright() as p:
        browser, page = open_explorer(p, server)
        box = page.locator(".st-key-ex_tour_box")
        box.wait_for(timeout=60_000)
        assert f"Tour 1/{len(route)}" in box.inner_text()
        page.get_by_role("button", name="Next").click()
        page.wait_for_function(AT_T, arg=[traj.records[route[1].step].t], timeout=60_000)
        text = box.inner_text()
        assert f"Tour 2/{len(route)}: {route[1].title}" in text
        assert f"{float(traj.records[route[1].step].perplexity[0]):,.0f} images" in text
        page.wait_for_function("location.search.includes('tour=2')", timeout=10_000)
        link = page.url.replace("tour=2", "tour=3")
        browser.close()
        browser, page = open_explorer(p, link)  # a shared link opens its stop at its step
        page.wait_for_function(AT_T, arg=[traj.records[route[2].step].t], timeout=60_000)
        assert f"Tour 3/{len(route)}: {route[2].title}" in page.locator(
            ".st-key-ex_tour_box").inner_text()
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()


def test_the_pixel_source_map_says_what_the_data_say(server, default_run, tmp_path):
    from golddiff.explore import lessons
    from golddiff.explore import source_figures as sf

    data, traj = default_run
    last = len(traj.records) - 1
    src = lessons.pixel_sources(data, traj, last, 0, "cpu")
    with sync_playwright() as p:
        browser, page = open_explorer(p, server)
        page.locator('[data-testid="stSlider"] input[type="range"]').first.focus()
        page.keyboard.press("End")
        page.wait_for_function(AT_T, arg=[traj.records[last].t], timeout=60_000)
        page.locator("#sources").scroll_into_view_if_needed()  # the section's heading
        page.wait_for_selector(".st-key-ex_sources .js-plotly-plot", timeout=60_000)
        page.wait_for_timeout(800)
        text = page_text(page)
        assert f"no image does ({sf._pct(src.shared)} of the pixels)" in text
        assert f"{len(src.images):,} image" in text
        for i, share in zip(src.images[:3], src.share[:3]):
            assert f"#{int(i)}  {share:.1%}" in text  # the top sources with their shares
        page.screenshot(path=str(tmp_path / "sources.png"), full_page=False)
        browser.close()
