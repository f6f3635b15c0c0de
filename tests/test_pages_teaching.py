"""AppTest of the teaching pages: each runs, its controls change what it shows, no exception (digits / toys)."""

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apptest import open_app

pytestmark = pytest.mark.usefixtures("fresh_st_caches")


def open_page(page: str, steps: int | None = None) -> AppTest:
    """app.py on one page (a file stem of app_pages/), the sidebar set to digits (fast)."""
    at = open_app(page, {"dataset": "digits"})
    if steps is not None:
        at.number_input(key="steps").set_value(steps).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["cfg"].dataset == "digits"
    return at


def test_app_registers_the_teaching_pages():
    at = open_app()
    for page in ("app_pages/toy2d.py", "app_pages/compare.py"):
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.title[0].value in ("2-D toy: posterior concentration", "Compare methods")


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def no_failure(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_toy_page_controls_move_the_picture():
    at = open_page("toy2d")
    no_failure(at)
    before = charts(at)[0]
    assert before["data"][0]["name"] == "start grid"
    at.number_input(key="toy_x").set_value(-1.0).run()
    no_failure(at)
    after = charts(at)[0]
    start = next(t for t in after["data"] if t["name"] == "start x_T")
    assert start["x"][0] == pytest.approx(-1.0)
    assert after != before
    # scrubbing t moves x_t and updates the metrics
    ts = at.select_slider(key="toy_step").options  # the t of each step, as shown
    k_before = at.metric[1].value
    at.select_slider(key="toy_step").set_value(len(ts) - 1).run()
    no_failure(at)
    assert f"t = {ts[-1]}" in charts(at)[0]["layout"]["title"]["text"]
    assert at.metric[1].value != k_before or ts[-1] == ts[0]
    at.radio(key="toy_name").set_value("gmm").run()
    no_failure(at)
    assert "1000" in at.expander[0].label


def test_toy_page_click_on_the_grid_moves_the_start():
    at = open_page("toy2d")
    # what st.plotly_chart(on_select="rerun") stores after a click on the start grid (trace 0)
    at.session_state["toy_plot"] = {
        "selection": {"points": [{"curve_number": 0, "x": 0.5, "y": -0.25}]}
    }
    at.run()
    no_failure(at)
    assert at.number_input(key="toy_x").value == pytest.approx(0.5)
    assert at.number_input(key="toy_y").value == pytest.approx(-0.25)
    # the same (old) click does not override a value typed afterwards
    at.number_input(key="toy_x").set_value(1.25).run()
    assert at.number_input(key="toy_x").value == pytest.approx(1.25)
    # a click on a training point (another trace) is not a start point
    at.session_state["toy_plot"] = {
        "selection": {"points": [{"curve_number": 1, "x": 0.1, "y": 0.1}]}
    }
    at.run()
    assert at.number_input(key="toy_x").value == pytest.approx(1.25)


def test_toy_page_bad_subset_sizes_are_one_sentence():
    at = open_page("toy2d")
    at.number_input(key="toy_kmin_moons").set_value(400).run()  # k_min > k_max (100)
    assert not at.exception
    (err,) = [e.value for e in at.error]
    assert "k_min" in err and "Traceback" not in err


def test_compare_page_runs_and_reports_every_method():
    at = open_page("compare", steps=4)
    no_failure(at)
    assert at.info  # nothing run yet: a hint, no results
    at.button(key="cmp_run").click().run()
    no_failure(at)
    table = at.dataframe[0].value
    assert list(table["method"]) == ["pca", "optimal", "wiener", "golddiff", "hybrid"]
    assert table.loc[table["method"] == "pca", "final r²"].iloc[0] == pytest.approx(1.0)
    names = {tr.get("name") for c in charts(at) for tr in c["data"]}
    assert {"random", "nearest"} <= names  # the pool ablation was drawn
    # optimal memorizes: its samples are training images
    assert table.loc[table["method"] == "optimal", "nearest-image distance"].iloc[0] < 1e-3
    # changing the selection marks the results stale until the next run
    at.multiselect(key="cmp_methods").set_value(["golddiff"]).run()
    assert at.warning
    at.button(key="cmp_run").click().run()
    no_failure(at)
    assert list(at.dataframe[0].value["method"]) == ["pca", "golddiff"]
    assert all(w.icon == ":material/speed:" for w in at.warning)  # no stale notice (busy: maybe)
    # one-step r² at the reference's own states beside the final r²
    table = at.dataframe[0].value
    kept = at.session_state["result_compare"].value["results"]
    for m, r in kept.items():
        row = table.loc[table["method"] == m].iloc[0]
        assert row["one-step r² (mean)"] == pytest.approx(np.mean(r.onestep_r2))
        assert row["final r²"] == pytest.approx(r.final_r2)


def test_compare_says_when_timings_come_from_a_busy_machine():
    from app_pages.compare_views import busy_note

    assert busy_note((0.5, 1.9), 2) is None  # below one runnable process per core
    note = busy_note((5.2, 4.8), 2)
    assert note and "5.2" in note and "4.8" in note and "2 cores" in note and "CPU ms" in note
    assert busy_note(None, 2) is None


def test_compare_page_without_methods_says_so():
    at = open_page("compare", steps=2)
    at.multiselect(key="cmp_methods").set_value([]).run()
    at.button(key="cmp_run").click().run()
    assert not at.exception and len(at.error) == 1


def test_gaussian_page_teleport_and_stale_marker():
    at = open_page("gaussian", steps=5)
    no_failure(at)
    gap = charts(at)[0]
    assert any("Wiener" in (tr.get("name") or "") for tr in gap["data"])
    at.select_slider(key="gauss_tskip").set_value(500).run()
    at.button(key="gauss_run").click().run()
    no_failure(at)
    labels = [m.label for m in at.metric]
    assert "teleport to 500 + GoldDiff" in labels
    assert at.metric[2].value == "2"  # 999 and 749 replaced by the closed form
    assert "saved" in at.metric[1].proto.delta
    at.select_slider(key="gauss_tskip").set_value(999).run()
    at.button(key="gauss_run").click().run()
    assert at.metric[2].value == "0" and not at.metric[1].proto.delta  # no fake saving
    at.select_slider(key="gauss_tskip").set_value(250).run()
    no_failure(at)
    assert at.warning  # results belong to t_skip = 999


def test_how_it_works_follows_t_and_the_pixel():
    at = open_page("how_it_works")
    no_failure(at)
    assert len(at.get("latex")) >= 6
    h_mid = at.metric[0].value
    last = len(at.select_slider(key="hiw_step").options) - 1
    at.select_slider(key="hiw_step").set_value(last).run()  # t = 0
    no_failure(at)
    assert at.metric[0].value != h_mid  # clean: the posterior has collapsed
    mask = lambda: next(
        c for c in charts(at) if "neighbourhood" in c["layout"]["title"]["text"]
    )  # noqa: E731
    before = mask()
    at.select_slider(key="hiw_step").set_value(1).run()  # t = 900
    at.number_input(key="hiw_row_digits").set_value(1).run()
    no_failure(at)
    assert mask()["data"][1]["y"] == [1] and mask() != before
