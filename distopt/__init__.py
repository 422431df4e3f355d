"""distopt: gradient communication for distributed training.

Compressors (Top-K, Rand-K, QSGD, natural, PowerSGD, ...), error-feedback methods (EF14,
EF21 and variants, EF21-W, EControl), theory stepsizes, gradient codes, and a DDP hook.
This package imports torch only; the simulator, Ray workers and experiments build on it.
"""
from __future__ import annotations

from ._alloc import keep_freed_memory
from .compressors import COMPRESSORS, Compressor, Payload
from .compressors import make as compressor
from .noise import Noise

__version__ = "0.1.0"

__all__ = ["COMPRESSORS", "Compressor", "Noise", "Payload", "compressor", "keep_freed_memory", "__version__"]
