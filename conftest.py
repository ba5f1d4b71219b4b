"""Docstring examples in mrl_core run as tests; they keep their caches and stores out of the user's."""

import pytest


@pytest.fixture(autouse=True)
def _doctest_cache_in_tmp(request, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("MRL_STORE", str(tmp_path / "results.duckdb"))
