"""Open the real app (app.py, st.navigation over app_pages/) in Streamlit's AppTest."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from conftest import ROOT


def open_app(page: str | None = None, query: dict | None = None, run: bool = True) -> AppTest:
    """app.py on `page` (a file stem of app_pages/, None: the default page) with a link's query."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if page is not None:
        at.switch_page(f"app_pages/{page}.py")
    return at.run() if run else at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def main_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.main.error]


def explorer_traj(at: AppTest):
    """The trajectory the Explorer shows."""
    return at.session_state["result_explorer"].value.traj


def chart_keys(at: AppTest) -> set[str]:
    """The user keys of the Plotly charts on the page (their element ids end with the key)."""
    return {c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")}
