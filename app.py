"""GoldDiff Explorer: Streamlit entry point (page config, shared sidebar, navigation)."""
import streamlit as st

from pages.common import sidebar

st.set_page_config(page_title="GoldDiff Explorer", page_icon=":material/blur_on:", layout="wide")

PAGES = [
    st.Page("pages/explorer.py", title="Explorer", icon=":material/travel_explore:", default=True),
]
page = st.navigation(PAGES)
sidebar()
page.run()
