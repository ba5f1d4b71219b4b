"""Where mrl_core keeps caches and the default results store."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder ($MRL_CACHE_DIR, else ~/.cache/mrl_core), created on first use."""
    path = Path(os.environ.get("MRL_CACHE_DIR", Path.home() / ".cache" / "mrl_core"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_path() -> Path:
    """The results store shared by the CLI and the app ($MRL_STORE, else <cache>/results.duckdb)."""
    return Path(os.environ.get("MRL_STORE", cache_dir() / "results.duckdb"))
