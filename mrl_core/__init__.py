"""Matryoshka width planner: choose embedding width, precision, index and funnel under a budget."""

import os

# Idle OpenMP threads sleep instead of spinning: on a small shared machine spinning FAISS/torch threads
# steal the cores the other thread needs (a 2-thread evaluation grid took 4x longer without this).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
