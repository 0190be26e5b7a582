"""ddpcifar: distributed CIFAR-10 training with FFCV, DDP and a terminal dashboard."""

__version__ = "0.1.0"
