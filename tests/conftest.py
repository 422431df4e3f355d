"""Test-session settings shared by every test module.

One intra-op thread: the tests' tensors are small, and on a busy 2-core machine (DDP tests
start extra processes; CI runs other jobs) OpenMP threads that busy-wait for a descheduled
sibling turn a 20 microsecond op into milliseconds -- measured 35x slower runs.
"""
import torch

torch.set_num_threads(1)
