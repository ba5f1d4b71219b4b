"""Matryoshka width planner: choose embedding width, precision, index and funnel under a budget."""

__version__ = "0.1.0"
