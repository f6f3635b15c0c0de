"""GoldDiff Explorer: Streamlit entry point (page config, shared sidebar, navigation)."""
import streamlit as st

from pages.common import sidebar

st.set_page_config(page_title="GoldDiff Explorer", page_icon=":material/blur_on:", layout="wide")

PAGES = [
    st.Page("pages/explorer.py", title="Explorer", icon=":material/travel_explore:", default=True),
    st.Page("pages/toy2d.py", title="2-D toy", icon=":material/scatter_plot:"),
    st.Page("pages/compare.py", title="Compare methods", icon=":material/compare:"),
    st.Page("pages/gaussian.py", title="Gaussian regime", icon=":material/show_chart:"),
    st.Page("pages/how_it_works.py", title="How it works", icon=":material/school:"),
]
page = st.navigation(PAGES)
sidebar(page.title)
page.run()
