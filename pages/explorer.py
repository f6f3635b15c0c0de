"""Explorer page (placeholder until the app issue): run GoldDiff on the default dataset."""
import streamlit as st

import golddiff

st.title("GoldDiff Explorer")
if st.button("Run"):
    ds = golddiff.load_dataset("mnist-5k")
    traj = golddiff.sample(golddiff.make_denoiser("golddiff", ds), steps=10, n=4, seed=0)
    st.image([(x[0] + 1) / 2 for x in traj.samples], width=96)
