"""The progress bar for work a page still does itself: encoding a dataset for the Funnel page's live search.

Everything longer runs as a background job (``app.jobs``) and reports its progress to the store instead.
"""

from __future__ import annotations

import streamlit as st

from mrl_core.progress import Progress


def progress_bar(label: str) -> Progress:
    """An st.progress bar and the ``progress(done, total)`` callback that mrl_core's encoding reports to."""
    bar = st.progress(0.0, text=label)

    def report(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"{label}: {done:,} / {total:,}")

    return report
