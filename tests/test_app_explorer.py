"""AppTest of the Explorer page: Run, scrub the timestep slider, switch samples; stale results are flagged,
sessions are isolated, user errors are one sentence (digits: fast; mnist-5k once)."""

import time

import pytest
from streamlit.testing.v1 import AppTest

from apptest import chart_keys, explorer_traj, main_errors, ok, open_app

pytestmark = pytest.mark.usefixtures("fresh_st_caches")


def explorer(dataset: str = "digits", **sidebar) -> AppTest:
    at = open_app("explorer", {"dataset": dataset})  # the instant start runs on this dataset
    for key, value in sidebar.items():
        widget = at.selectbox(key=key) if key == "method" else at.number_input(key=key)
        widget.set_value(value).run()
    ok(at)
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def subset_header(at: AppTest) -> str:
    return next(h.value for h in at.subheader if "subset" in h.value or "Global" in h.value)


def run(at: AppTest) -> AppTest:
    at.button(key="ex_run").click().run()
    ok(at)
    return at


def test_app_opens_on_the_explorer():
    at = open_app()
    ok(at)
    assert at.title[0].value.startswith("Explorer")
    assert any(c.value.startswith("Device: ") for c in at.sidebar.caption)
    assert at.button(key="ex_run").label == "Run"
    # instant start: a first visit shows a finished run of the defaults without pressing Run
    traj = explorer_traj(at)
    assert traj.meta["dataset"] == "mnist-5k" and len(traj.records) == 10
    assert metric(at, "t (timestep)") == "999"  # the first step: pure noise


def scrub_first_and_last(at: AppTest) -> None:
    traj = explorer_traj(at)
    first, last = traj.records[0], traj.records[-1]
    S = len(traj.records)
    assert at.select_slider(key="ex_step").value == 0
    assert metric(at, "t (timestep)") == str(first.t)
    assert metric(at, "k_t (golden subset)") == f"{first.k_t:,}"
    assert metric(at, "captured mass W_S") == f"{first.captured_mass[0]:.3f}"
    assert f"{first.k_t:,}" in subset_header(at)
    assert "ex_nn" not in chart_keys(at)  # the memorization pair only at the last step

    at.select_slider(key="ex_step").set_value(S - 1).run()
    ok(at)
    assert explorer_traj(at) is traj  # a view change never recomputes
    assert metric(at, "t (timestep)") == str(last.t) == "0"
    assert metric(at, "k_t (golden subset)") == f"{last.k_t:,}"
    assert metric(at, "captured mass W_S") == f"{last.captured_mass[0]:.3f}"
    assert last.k_t < first.k_t  # the golden subset shrank
    assert last.perplexity[0] < first.perplexity[0] / 100  # while the posterior concentrated
    assert f"{last.k_t:,}" in subset_header(at)
    assert "ex_nn" in chart_keys(at)  # final sample vs nearest training image

    at.selectbox(key="ex_sample").set_value(1).run()
    ok(at)
    assert metric(at, "captured mass W_S") == f"{last.captured_mass[1]:.3f}"
    assert explorer_traj(at) is traj


def test_run_and_scrub_digits():
    at = explorer("digits")
    assert at.session_state["cfg"].dataset == "digits"
    run(at)
    traj = explorer_traj(at)
    assert traj.meta["dataset"] == "digits" and traj.meta["method"] == "golddiff"
    assert len(traj.records) == 10 and traj.samples.shape[0] == 4
    assert at.status[0].label.startswith("Done: 10 steps in")
    assert not at.warning  # the result matches the sidebar
    scrub_first_and_last(at)


def test_run_and_scrub_mnist_5k():
    at = explorer("mnist-5k")
    t0 = time.perf_counter()
    run(at)
    elapsed = time.perf_counter() - t0
    assert explorer_traj(at).meta["N"] == 5000
    scrub_first_and_last(at)
    assert elapsed < 60, f"Run on mnist-5k took {elapsed:.1f} s"


def test_changed_settings_flag_the_old_result_without_recomputing():
    at = run(explorer("digits", steps=4))
    traj = explorer_traj(at)
    at.number_input(key="seed").set_value(7).run()
    ok(at)
    assert explorer_traj(at) is traj
    assert len(at.warning) == 1 and "previous settings" in at.warning[0].value
    assert "seed 0" in at.warning[0].value
    run(at)
    assert explorer_traj(at).meta["seed"] == 7 and not at.warning


def test_two_sessions_do_not_share_results():
    a = run(explorer("digits", steps=3))
    b = explorer("digits", steps=3, seed=5)
    assert explorer_traj(b).meta["seed"] == 0  # b's own instant start
    assert "previous settings" in b.warning[0].value
    run(b)
    a.run()
    ok(a)
    assert explorer_traj(a).meta["seed"] == 0
    assert explorer_traj(b).meta["seed"] == 5
    assert explorer_traj(a) is not explorer_traj(b)


def test_method_without_subset_shows_the_global_posterior_once():
    at = run(explorer("digits", method="optimal", steps=3))
    labels = {m.label for m in at.metric}
    assert "k_t (golden subset)" not in labels and "captured mass W_S" not in labels
    heads = [h.value for h in at.subheader]
    assert any(h.startswith("Exact posterior: top") for h in heads)
    assert not any("Golden subset" in h or "Global posterior" in h for h in heads)


def test_play_steps_through_to_the_end():
    at = run(explorer("digits", steps=3))
    at.button(key="ex_play").click().run()
    ok(at)
    assert at.select_slider(key="ex_step").value == 2
    assert at.button(key="ex_play").label == "Play"  # stopped at the end


def test_user_error_is_one_sentence_and_nothing_runs():
    at = explorer("digits", steps=3)
    at.number_input(key="k_min_digits").set_value(500).run()  # k_min > k_max (180)
    assert not at.exception
    (err,) = main_errors(at)
    assert "\n" not in err and "Traceback" not in err and "k_min" in err
    assert "ex_run" not in {b.key for b in at.button}  # no Run with a bad value
    assert explorer_traj(at).meta["steps"] == 10  # the earlier run stays


def test_map_view_with_a_map_and_the_build_button(monkeypatch):
    """The map appears when golddiff.embed has one; otherwise a button builds it (a fast stand-in here: a real
    UMAP fit takes about a minute)."""
    import numpy as np

    from golddiff.explore import embed

    store = {}

    def fake_map(data):
        rng = np.random.default_rng(0)
        return embed.EmbeddingMap(
            rng.normal(size=(data.N, 2)).astype(np.float32),
            np.arange(data.N),
            data.flat().float(),
            {"method": "umap", "dataset": data.name},
            data,
        )

    def fake_build(data, progress=None, **kw):
        progress(0.5, "fitting")
        store[data.name] = fake_map(data)
        progress(1.0, "map ready")
        return store[data.name]

    monkeypatch.setattr(embed, "load_map", lambda data, **kw: store.get(data.name))
    monkeypatch.setattr(embed, "build_map", fake_build)
    at = run(explorer("digits", steps=3))
    assert "ex_map" not in chart_keys(at)
    at.button(key="ex_build_map").click().run()
    ok(at)
    assert "digits" in store
    assert "ex_map" in chart_keys(at)
    at.select_slider(key="ex_step").set_value(2).run()
    ok(at)
    assert {"ex_map", "ex_nn"} <= chart_keys(at)


@pytest.mark.parametrize("method", ["pca", "wiener", "hybrid"])
def test_every_method_renders_first_and_last_step(method):
    at = run(explorer("digits", method=method, steps=4))
    traj = explorer_traj(at)
    for step in (0, 3):
        at.select_slider(key="ex_step").set_value(step).run()
        ok(at)
        rec = traj.records[step]
        has_subset = rec.subset_idx is not None
        labels = {m.label for m in at.metric}
        if has_subset:
            assert metric(at, "k_t (golden subset)") == f"{rec.k_t:,}"
        else:
            assert "k_t (golden subset)" not in labels
        heads = [h.value for h in at.subheader]
        assert any(h.startswith("Golden subset") for h in heads) == has_subset
        sources = any(h.startswith("Pixel sources") for h in heads) or any(
            c.value.startswith("No image holds more than half") for c in at.main.caption)
        assert sources == (rec.method == "pca")


def test_downloadable_dataset_waits_for_the_button_then_downloads_with_progress(monkeypatch):
    """Picking a dataset that is not on disk must not start a download by itself; the button does."""
    import golddiff
    from golddiff import data as gdata

    real_status, calls = gdata.dataset_status, []
    monkeypatch.setattr(
        gdata,
        "dataset_status",
        lambda n: ("downloadable", None) if n == "mnist" else real_status(n),
    )
    digits = golddiff.load_dataset("digits")

    def fake_load(name, progress=None):  # stands in for the network download
        calls.append(name)
        if progress is not None:
            progress(512 * 1024, 1024 * 1024)
            progress(1024 * 1024, 1024 * 1024)
        return digits if name == "mnist" else golddiff.data.load_dataset(name)

    monkeypatch.setattr(golddiff, "load_dataset", fake_load)
    at = explorer("digits")
    at.selectbox(key="dataset").set_value("mnist").run()
    ok(at)
    assert "mnist" not in calls  # nothing downloaded by merely picking it
    assert any("not on this machine" in i.value for i in at.sidebar.info)
    assert at.session_state["cfg"] is None  # pages wait instead of using the old settings
    assert any("Pick a dataset" in i.value for i in at.info)
    at.button(key="download_mnist").click().run()
    ok(at)
    assert "mnist" in calls and at.session_state["cfg"].dataset == "mnist"
