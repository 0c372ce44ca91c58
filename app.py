"""Entry point of the web app: the sidebar (project, sign-in) and the page navigation.

Run with ``make run``: it creates the demo project when absent and starts the worker that runs jobs.
"""
import streamlit as st

from pages.common import sidebar

st.set_page_config(page_title="Labelling studio", page_icon=":material/label:", layout="wide")
nav = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/label.py", title="Label", icon=":material/label:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/pseudo_labels.py", title="Pseudo-labels", icon=":material/auto_label:"),
    st.Page("pages/clusters.py", title="Clusters", icon=":material/bubble_chart:"),
    st.Page("pages/identities.py", title="Identities", icon=":material/person_search:"),
    st.Page("pages/consensus.py", title="Consensus", icon=":material/groups:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:"),
])
sidebar()
nav.run()
