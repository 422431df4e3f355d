"""One intra-op thread inside a block, for small tensor work.

On a busy 2-core machine a second OpenMP thread only adds hand-off and spin-wait time to small
ops: a 256 x 229 solve measured 40x slower, an RNN step 6x slower, with 2 threads than with 1.
``single_thread`` sets torch's (process-wide) thread count to 1 and restores it afterwards; not
for use while other Python threads run torch work.
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def single_thread():
    old = torch.get_num_threads()
    if old == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
