"""The Streamlit dashboard: pages that wire widgets to mrl_core and draw what the store holds."""
