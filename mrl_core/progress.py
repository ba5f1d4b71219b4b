"""The progress callback every long operation accepts: ``progress(done, total)``."""

from typing import Callable

Progress = Callable[[int, int], None]
"""Called with how many units of work are done and how many there are in all."""
