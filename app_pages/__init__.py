"""The app's pages (run by app.py through st.navigation) and the UI modules they share.

Pages: explorer, toy2d, compare, gaussian, how_it_works. Shared, one concept each:
resources (cached datasets and corpora), config (the sidebar's Config and the page guard), links
(the URL <-> settings), widgets (checked inputs, parameter widgets, chart options), sidebar,
runs (the run store, cost check, stop notice), play (the view state and the one play loop),
errors (the sentence shown for an exception). All math comes from golddiff.
"""
