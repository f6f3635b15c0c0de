"""GoldDiff Explorer: Streamlit entry point (page config, shared sidebar, navigation)."""
import streamlit as st

from app_pages.sidebar import sidebar

st.set_page_config(page_title="GoldDiff Explorer", page_icon=":material/blur_on:", layout="wide")

PAGES = [
    st.Page("app_pages/explorer.py", title="Explorer", icon=":material/travel_explore:", default=True),
    st.Page("app_pages/toy2d.py", title="2-D toy", icon=":material/scatter_plot:"),
    st.Page("app_pages/compare.py", title="Compare methods", icon=":material/compare:"),
    st.Page("app_pages/gaussian.py", title="Gaussian regime", icon=":material/show_chart:"),
    st.Page("app_pages/how_it_works.py", title="How it works", icon=":material/school:"),
]
page = st.navigation(PAGES)
sidebar(page.title)
page.run()
