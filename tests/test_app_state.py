"""In AppTest: visible errors, the instant start, the link (st.query_params) both ways,
a scenario, a stopped run, and a sidebar that shows only what a page uses."""

import pytest
from streamlit.testing.v1 import AppTest

from apptest import explorer_traj, main_errors, open_app
from test_app_explorer import metric

pytestmark = pytest.mark.usefixtures("fresh_st_caches")


def explorer(query: dict | None = None) -> AppTest:
    at = open_app("explorer", query)
    assert not at.exception, [e.value for e in at.exception]
    return at


def in_status(at: AppTest) -> list[str]:
    """Error texts inside collapsible blocks (st.status is one)."""
    return [e.value for x in at.expander for e in x.error]


def test_a_user_error_is_visible_in_the_main_area():
    """A k_min above k_max gives a red box outside the collapsed status."""
    at = explorer({"dataset": "digits"})
    at.number_input(key="k_min_digits").set_value(170).run()
    at.number_input(key="k_max_digits").set_value(100).run()
    assert any("k_min=170 is larger than k_max=100" in e for e in main_errors(at))
    assert not in_status(at)


def test_the_link_sets_the_view_and_follows_the_sidebar():
    """URL state: the link's settings reach the sidebar and the shown step; changes write back."""
    at = explorer({"dataset": "digits", "seed": "3", "steps": "4", "k_min": "40", "t": "333"})
    cfg = at.session_state["cfg"]
    assert (cfg.dataset, cfg.seed, cfg.steps, cfg.params["k_min"]) == ("digits", 3, 4, 40)
    assert metric(at, "t (timestep)") == "333"  # 4 steps: 999, 666, 333, 0
    assert not at.error
    at.number_input(key="seed").set_value(5).run()
    q = at.query_params
    assert q["seed"] == ["5"] or q["seed"] == "5"
    assert (q["k_min"] in ("40", ["40"])) and (q["dataset"] in ("digits", ["digits"]))


@pytest.mark.parametrize(
    "key,value", [("steps", "abc"), ("steps", "5000"), ("method", "magic"), ("k_min", "-3")]
)
def test_a_bad_value_in_the_link_is_a_visible_error(key, value):
    at = explorer({"dataset": "digits", key: value})
    assert any(f"{key}={value!r}" in e.value for e in at.main.error), [e.value for e in at.error]


def test_a_link_with_an_impossible_pair_gives_the_sidebar_error():
    """The same sentence as the sidebar gives for k_min > k_max."""
    at = explorer({"dataset": "digits", "k_min": "170", "k_max": "100"})
    assert any("k_min=170 is larger than k_max=100" in e.value for e in at.main.error)


def test_a_stopped_run_is_announced():
    """A run interrupted by a page or setting change says so on the next visit."""
    at = explorer({"dataset": "digits"})
    at.session_state["ex_running"] = "run"
    at.run()
    assert any("was stopped before it finished" in w.value for w in at.warning)


def test_the_random_pool_scenario_sets_the_sidebar_and_shows_the_miss():
    at = explorer({"dataset": "digits"})
    at.button(key="ex_scenario_1").click().run()
    cfg = at.session_state["cfg"]
    assert (cfg.dataset, cfg.method, cfg.params["pool"]) == ("mnist-5k", "golddiff", "random")
    assert any("random pool misses" in i.value.lower() for i in at.info)
    assert metric(at, "t (timestep)") == "222"
    assert any("missed the posterior" in w.value for w in at.warning)
    # the caption's claims, read off the run itself: one image, and the subset missed it
    rec = next(r for r in explorer_traj(at).records if r.t == 222)
    assert rec.perplexity[0] < 1.5 and rec.captured_mass[0] < 0.05
    # and the story's numbers are this run's, not a copy of one seed's
    story = next(i.value for i in at.info if "random pool misses" in i.value.lower())
    assert f"W_S is {float(rec.captured_mass[0]):.3f}" in story and "t = 222" in story
    at.button(key="ex_scenario_2").click().run()  # pool auto fixes it
    assert at.session_state["cfg"].params["pool"] == "auto"
    rec = next(r for r in explorer_traj(at).records if r.t == 222)
    assert rec.captured_mass[0] > 0.999 and metric(at, "captured mass W_S") == "1.000"
    assert not any("missed the posterior" in w.value for w in at.warning)


def page(name: str) -> AppTest:
    return open_app(name, {"dataset": "digits"})


def test_the_sidebar_shows_what_each_page_uses():
    """Tooltips on every parameter; the hybrid switch only for hybrid; the 2-D toy
    and Compare mark the controls they ignore."""
    at = explorer({"dataset": "digits"})
    keys = {w.key for w in at.sidebar.number_input} | {w.key for w in at.sidebar.radio}
    assert "snr_switch" not in keys and "k_min_digits" in keys
    for w in list(at.sidebar.number_input) + list(at.sidebar.radio):
        if w.key not in ("steps", "n", "seed", "fig_format"):
            assert w.help, w.key
    at.selectbox(key="method").set_value("hybrid").run()
    assert "snr_switch" in {w.key for w in at.sidebar.number_input}
    toy = page("toy2d")
    assert toy.selectbox(key="dataset").disabled and toy.number_input(key="seed").disabled
    assert any("own controls" in i.value for i in toy.sidebar.info)
    cmp_ = page("compare")
    assert cmp_.selectbox(key="method").disabled and not cmp_.number_input(key="seed").disabled


def test_a_failed_download_leaves_no_progress_bar(monkeypatch):
    """After a failed download the "Downloading..." bar is gone and the error says
    which mirrors failed."""
    import golddiff
    from golddiff import data as gdata

    real_status = gdata.dataset_status
    monkeypatch.setattr(
        gdata,
        "dataset_status",
        lambda n: ("downloadable", None) if n == "mnist" else real_status(n),
    )
    real_load = golddiff.load_dataset

    def failing_load(name, progress=None):
        if name != "mnist":
            return real_load(name)
        progress(512 * 1024, 1024 * 1024)
        raise ValueError("MNIST was not found and downloading it failed (a: 404; b: timeout).")

    monkeypatch.setattr(golddiff, "load_dataset", failing_load)
    at = explorer({"dataset": "digits"})
    at.selectbox(key="dataset").set_value("mnist").run()
    at.button(key="download_mnist").click().run()
    assert not at.exception
    assert any("a: 404; b: timeout" in e.value for e in at.sidebar.error)
    assert not at.sidebar.get("progress")


def test_play_advances_the_toy_and_how_it_works():
    """One screen: Play works on the 2-D toy and How it works too (one frame per rerun)."""
    toy = page("toy2d")
    before = toy.select_slider(key="toy_step").value
    toy.button(key="toy_play").click().run(timeout=300)
    assert toy.select_slider(key="toy_step").value > before  # towards clean
    hiw = page("how_it_works")
    before = hiw.select_slider(key="hiw_step").value
    hiw.button(key="hiw_play").click().run(timeout=300)
    assert hiw.select_slider(key="hiw_step").value > before


def test_every_timestep_slider_starts_at_pure_noise():
    """One direction everywhere; the leftmost option is the noisiest t."""
    gauss = page("gaussian")
    hiw = page("how_it_works")
    toy = page("toy2d")
    for at, key in ((gauss, "gauss_tskip"), (hiw, "hiw_step"), (toy, "toy_step")):
        opts = [int(o) for o in at.select_slider(key=key).options]  # as shown: the t of each
        assert opts == sorted(opts, reverse=True) and opts[0] >= 950, key
    ex = explorer({"dataset": "digits"})
    assert ex.select_slider(key="ex_step").options[0].startswith("t = 999")


def test_a_stopped_comparison_or_teleport_is_announced():
    """The interrupted-run notice on the other pages that run work behind a button."""
    for name, flag in (("compare", "cmp_running"), ("gaussian", "gauss_running")):
        at = page(name)
        at.session_state[flag] = "run"
        at.run()
        assert any("was stopped before it finished" in w.value for w in at.warning), name


def test_every_scenario_story_reads_its_numbers_off_the_run():
    """Each story runs on a finished run of its settings (digits here, to be quick) and quotes
    that run's perplexity at its first step, not a number written into the text."""
    import golddiff
    from golddiff.explore.scenarios import SCENARIOS

    data = golddiff.load_dataset("digits")
    for sc in SCENARIOS:
        den = golddiff.make_denoiser(sc.settings["method"], data, **sc.params)
        traj = golddiff.sample(den, steps=sc.settings["steps"], n=2, seed=sc.settings["seed"])
        text = sc.text(traj)
        assert text and "nan" not in text, sc.title
        if sc.title in ("The posterior concentrates", "The Gaussian regime"):
            assert f"{float(traj.records[0].perplexity[0]):,.0f}" in text, sc.title
