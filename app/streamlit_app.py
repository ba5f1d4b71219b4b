"""Entry point: ``streamlit run app/streamlit_app.py`` opens the width planner on the Planner page."""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts only app/ on sys.path; the pages import mrl_core and the app package from the repository root.
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))

st.set_page_config(page_title="Matryoshka width planner", page_icon=":material/straighten:", layout="wide")
navigation = st.navigation(
    [
        st.Page("views/planner.py", title="Planner", icon=":material/target:", default=True),
        st.Page("views/evaluate.py", title="Evaluate", icon=":material/science:"),
        st.Page("views/funnel.py", title="Funnel", icon=":material/filter_alt:"),
        st.Page("views/train.py", title="Train", icon=":material/model_training:"),
        st.Page("views/runs.py", title="Runs", icon=":material/history:"),
    ]
)
navigation.run()
