"""Every invalid widget value is a sentence and nothing runs on an older value; the Explorer's
downloads are served as files that outlive a rerun, and a download that cannot be made says so."""

import pytest

from apptest import explorer_traj, main_errors, ok, open_app

pytestmark = pytest.mark.usefixtures("fresh_st_caches")


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("n", 100000, ("Samples", "64")),
        ("steps", 0, ("Steps", "1,000")),
        ("k_max_digits", 5000, ("k_max", "1797")),
        ("mask_threshold_digits", 1.5, ("mask_threshold", "1")),
        ("temperature", 0.0, ("temperature",)),
        ("temperature", 1e-300, ("temperature", "at least")),
        ("tolerance", 5.0, ("tolerance", "1")),
        ("low_res_digits", 3, ("low_res", "divide")),
    ],
)
def test_an_invalid_sidebar_value_is_a_sentence_and_nothing_runs(key, value, words):
    at = open_app("explorer", {"dataset": "digits", "steps": "3"})
    ok(at)
    before = explorer_traj(at)
    at.number_input(key=key).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    (sentence,) = main_errors(at)
    assert all(w in sentence for w in words), sentence
    assert at.session_state["cfg"] is None  # no page can run with the old value
    assert "ex_run" not in {b.key for b in at.button}
    assert explorer_traj(at) is before


@pytest.mark.parametrize(
    "name,raw,words",
    [
        ("n", "100000", ("n", "64")),
        ("steps", "0", ("steps", "1,000")),
        ("temperature", "-1", ("temperature", "0")),
        ("mask_threshold", "2", ("mask_threshold", "1")),
        ("pool", "far", ("pool", "random")),
    ],
)
def test_a_bad_link_value_is_a_sentence_and_is_not_used(name, raw, words):
    at = open_app("explorer", {"dataset": "digits", "steps": "3", name: raw})
    assert not at.exception, [e.value for e in at.exception]
    (sentence,) = main_errors(at)
    assert f"{name}={raw!r}" in sentence and all(w in sentence for w in words), sentence
    assert at.session_state["cfg"] is not None  # the link's value was kept out, the rest runs


def test_a_tiny_temperature_from_a_link_is_refused_by_the_dataset_rule():
    at = open_app("explorer", {"dataset": "digits", "steps": "3", "temperature": "1e-300"})
    assert not at.exception
    (sentence,) = main_errors(at)
    assert "temperature" in sentence and "at least" in sentence, sentence
    assert at.session_state["cfg"] is None


def test_an_emptied_parameter_is_a_sentence_not_the_default():
    at = open_app("explorer", {"dataset": "digits", "steps": "3"})
    ok(at)
    at.number_input(key="k_max_digits").set_value(None).run()
    assert not at.exception
    (sentence,) = main_errors(at)
    assert sentence.startswith("k_max"), sentence  # empty, or the widget's 0: never the default
    assert at.session_state["cfg"] is None


def test_a_fixed_value_runs_with_the_new_value():
    at = open_app("explorer", {"dataset": "digits", "steps": "3"})
    at.number_input(key="n").set_value(100000).run()
    at.number_input(key="n").set_value(2).run()
    ok(at)
    at.button(key="ex_run").click().run()
    ok(at)
    assert explorer_traj(at).samples.shape[0] == 2


@pytest.mark.parametrize(
    "page,key,value",
    [("toy2d", "toy_steps", 500), ("toy2d", "toy_x", 9.0), ("how_it_works", "hiw_row_digits", 99)],
)
def test_an_invalid_value_on_a_page_is_a_sentence(page, key, value):
    at = open_app(page, {"dataset": "digits"})
    ok(at)
    at.number_input(key=key).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and f"{value:,}" in errors[0], errors


def downloads(at) -> dict:
    return {d.proto.id.rsplit("-", 1)[-1]: d.proto for d in at.get("download_button")}


def test_downloads_are_files_that_outlive_a_rerun():
    """A browser that still holds the buttons of the previous script run (a click on one button,
    then on the other while the page redraws) must still get the file: each button carries the
    address of stored bytes, that address depends only on the bytes, and a click does not rerun."""
    at = open_app("explorer", {"dataset": "digits", "steps": "3"})
    ok(at)
    first = downloads(at)
    assert set(first) == {"ex_dl_npz", "ex_dl_gif"}
    for proto in first.values():
        assert proto.url and not proto.deferred_file_id and proto.ignore_rerun
    at.select_slider(key="ex_step").set_value(1).run()  # any redraw of the views
    again = downloads(at)
    assert {k: p.url for k, p in again.items()} == {k: p.url for k, p in first.items()}
    at.selectbox(key="ex_sample").set_value(1).run()  # another sample: another GIF
    assert downloads(at)["ex_dl_gif"].url != first["ex_dl_gif"].url
    assert downloads(at)["ex_dl_npz"].url == first["ex_dl_npz"].url


def test_a_download_that_cannot_be_made_is_a_sentence(monkeypatch):
    from golddiff.explore import takeaway

    def broken(*a, **k):
        raise ValueError("imageio cannot write GIFs here.")

    monkeypatch.setattr(takeaway, "run_gif", broken)
    at = open_app("explorer", {"dataset": "digits", "steps": "3"})
    assert not at.exception
    (sentence,) = main_errors(at)
    assert ".gif could not be made" in sentence and "imageio cannot write GIFs here." in sentence
    assert set(downloads(at)) == {"ex_dl_npz"}  # the other download still works
