"""Entry point: ``streamlit run app/streamlit_app.py`` opens the width planner on the Planner page.

It listens on localhost (.streamlit/config.toml). With an ``[auth]`` section in .streamlit/secrets.toml only
signed-in users get past the first screen (``st.login``, OpenID Connect); without one the app is open to
whoever can reach it.
"""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts only app/ on sys.path; the pages import mrl_core and the app package from the repository root.
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))

from app.jobs_panel import jobs_panel


def sign_in_required() -> bool:
    """Whether secrets.toml configures sign-in (an ``[auth]`` section for ``st.login``)."""
    return st.secrets.load_if_toml_exists() and "auth" in st.secrets


st.set_page_config(page_title="Matryoshka width planner", page_icon=":material/straighten:", layout="wide")
signed_out = sign_in_required() and not st.user.is_logged_in
navigation = st.navigation(
    [
        st.Page("views/planner.py", title="Planner", icon=":material/target:", default=True),
        st.Page("views/evaluate.py", title="Evaluate", icon=":material/science:"),
        st.Page("views/funnel.py", title="Funnel", icon=":material/filter_alt:"),
        st.Page("views/train.py", title="Train", icon=":material/model_training:"),
        st.Page("views/runs.py", title="Runs", icon=":material/history:"),
    ],
    position="hidden" if signed_out else "sidebar",
)
if signed_out:
    st.title("Matryoshka width planner")
    st.write("Sign in to plan, evaluate and train. The work you start is recorded under your name.")
    st.button("Log in", type="primary", icon=":material/login:", on_click=st.login)
    st.stop()
with st.sidebar:
    if sign_in_required():
        st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
        st.button("Log out", icon=":material/logout:", on_click=st.logout, key="log_out")
    jobs_panel()
navigation.run()
