"""A CNN written from scratch in NumPy: layers with hand-written backward passes, SGD, trainer.

NumPy only (no torch, no pydantic) so every step of learning is visible. Arrays are NHWC; see
im2col.py. The caller (ddpcifar.engine.numpy_runner) reads the data and the validated spec.
"""

from ddpcifar.scratch.augment import Augment
from ddpcifar.scratch.network import DEFAULT_ARCHITECTURE, Sequential
from ddpcifar.scratch.settings import ScratchSettings
from ddpcifar.scratch.trainer import Splits, train_scratch

__all__ = ["Augment", "DEFAULT_ARCHITECTURE", "ScratchSettings", "Sequential", "Splits",
           "train_scratch"]
