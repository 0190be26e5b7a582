"""A CNN written from scratch in NumPy: layers with hand-written backward passes, SGD, trainer.

NumPy only (no torch) so every step of learning is visible. Arrays are NHWC; see im2col.py.
"""

from ddpcifar.scratch.network import DEFAULT_ARCHITECTURE, Sequential
from ddpcifar.scratch.trainer import ScratchConfig, train_scratch

__all__ = ["DEFAULT_ARCHITECTURE", "ScratchConfig", "Sequential", "train_scratch"]
