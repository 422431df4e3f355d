"""Native kernels, written here in C and built on first use with the machine's C compiler.

``topk_rows``: exact row-wise Top-K of a stack ``[n, d]`` (ties to the lowest indices, the
same sets as ``distopt.compressors.sparse.topk_select``), optionally fused with error
feedback's shift (rows ``a - b``, and ``b + c`` written out), in one pass over the rows per
thread (``topk.c`` explains the algorithm); a single row ``[1, d]`` is split over the threads
by ranges of its groups (OpenMP builds). Eager PyTorch needs about ten passes over the
stack for the same work: this is what makes a vectorized EF21 + Top-K round cost a few
passes over memory (``distopt bench simulator``).

Build: ``cc -O3 -march=native -ffp-contract=off -shared -fPIC`` into
``$DISTOPT_CACHE/native`` (default ``~/.cache/distopt``), keyed by a hash of the source, the
flags and this CPU, written atomically; a second process reuses it. Everything still works
without a compiler: ``available()`` is then False and callers take the PyTorch path (a
warning says why, once). ``DISTOPT_NATIVE=0`` turns the kernels off (tests compare both paths).

Threads: rows are split into ``torch.get_num_threads()`` blocks. Built with ``-fopenmp``, the
kernel runs them in an OpenMP region on the libgomp PyTorch already loaded (same soname, so one
runtime and one pool of threads): PyTorch's workers, which spin for a while after each of its
parallel ops, take the blocks instead of competing with them -- on 2 cores, a pool of our own
threads made a simulator round 1.5x slower for that reason. Without OpenMP, a Python thread
pool runs the blocks (ctypes releases the GIL).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

__all__ = ["available", "parallel_row", "topk_rows"]

_SRC = Path(__file__).with_name("topk.c")
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-std=c99", "-shared", "-fPIC"]
_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_tried = False
_pool: Optional[ThreadPoolExecutor] = None


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _compile(cc: str, flags: list[str], root: Path) -> Path:
    """The library built with ``flags`` (cached by a hash of the source, compiler, flags, CPU)."""
    key = hashlib.sha256(_SRC.read_bytes() + " ".join([cc, *flags, platform.machine(), _cpu_id()]).encode()).hexdigest()[:16]
    so = root / f"topk-{key}.so"
    if so.exists():
        return so
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=root)
    os.close(fd)
    try:
        res = subprocess.run([cc, *flags, "-o", tmp, str(_SRC)], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise OSError(f"{cc} failed: {res.stderr.strip()[:500]}")
        os.replace(tmp, so)  # atomic: a concurrent process sees the whole library or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return so


def _build() -> ctypes.CDLL:
    """Built with OpenMP where the compiler has it (the library then binds to the libgomp that
    PyTorch loaded: same soname), else without (rows go to a Python thread pool); without
    ``-march=native`` if the compiler refuses it."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc/gcc) on PATH")
    root = Path(os.environ.get("DISTOPT_CACHE") or Path.home() / ".cache" / "distopt") / "native"
    portable = [f for f in _FLAGS if f != "-march=native"]
    errors = []
    for flags in (_FLAGS + ["-fopenmp"], _FLAGS, portable):  # the fastest build the compiler takes
        try:
            so = _compile(cc, flags, root)
            break
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(str(e))
    else:
        raise OSError(errors[-1])
    lib = ctypes.CDLL(str(so))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    io = [p, p, p, ctypes.c_double, ctypes.c_double, p, p, i64, i64, p, p, p]  # a b c eta sa out eout d k vals idx bad
    for name in ("topk_rows_f32", "topk_rows_f64"):
        fn = getattr(lib, name)
        fn.argtypes = io + [i64, i64, ctypes.c_int]
        fn.restype = ctypes.c_int
    lib.distopt_openmp.restype = ctypes.c_int
    if lib.distopt_openmp():
        for name in ("topk_row_f32", "topk_row_f64"):
            fn = getattr(lib, name)
            fn.argtypes = io + [ctypes.c_int]
            fn.restype = ctypes.c_int
    return lib


def _load() -> Optional[ctypes.CDLL]:
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:  # (reached only through available(), which has checked DISTOPT_NATIVE)
        if not _tried:
            try:
                _lib = _build()
            except (OSError, subprocess.SubprocessError) as e:
                warnings.warn(f"distopt: native Top-K kernel unavailable ({e}); using the PyTorch path "
                              "(install a C compiler, or set DISTOPT_NATIVE=0 to silence this)", RuntimeWarning)
            _tried = True
    return _lib


def available() -> bool:
    """Whether the native kernels are on (built and not turned off by ``DISTOPT_NATIVE=0``)."""
    return os.environ.get("DISTOPT_NATIVE", "1") != "0" and _load() is not None


def parallel_row() -> bool:
    """Whether one long row can be split over threads (the kernel was built with OpenMP)."""
    return available() and bool(_lib.distopt_openmp())


def _ptr(t: Optional[Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def topk_rows(a: Tensor, k: int, b: Optional[Tensor] = None, out: Optional[Tensor] = None,
              c: Optional[Tensor] = None, eta: float = 0.0, eout: Optional[Tensor] = None, scale: float = 1.0
              ) -> Optional[tuple[Tensor, Tensor, Tensor]]:
    """(values ``[n, k]``, indices ``[n, k]`` int64 ascending, non-finite flags ``[n]`` bool) of
    the top-k D of each row of ``r = a - b`` (``b`` None: ``r = a``; with the error ``c``,
    EControl's ``r = eta c + (a - b)``; with ``c`` and no ``b``, EF14's ``r = eta c + scale a``),
    and, where given, ``out = b + D`` and ``eout = c + (a - b) - D`` (``c + scale a - D`` without
    ``b``; each ``[n, d]``), bit for bit what the torch ops give. ``out`` may be ``b`` itself
    (a donated state): D is added into it in place, k entries per row, and a row with a NaN or
    an inf is left as it was. Needs CPU,
    contiguous float32/float64 ``[n, d]`` tensors of one dtype and 1 <= k < d. None when the
    kernels are unavailable (the caller takes the PyTorch path)."""
    if not available() or a.shape[-1] >= 1 << 32:  # (candidates' positions are 32-bit)
        return None
    n, d = a.shape
    if not 1 <= k < d:
        raise ValueError(f"topk_rows: need 1 <= k < d, got k={k}, d={d}")
    for t in (a, b, out, c, eout):
        if t is not None and (t.device.type != "cpu" or t.dtype != a.dtype or not t.is_contiguous() or t.shape != a.shape):
            raise ValueError("topk_rows: a, b, c, out and eout must be contiguous CPU tensors of one shape and dtype")
    if out is not None and b is None:
        raise ValueError("topk_rows: out = b + D needs b")
    if eout is not None and c is None:
        raise ValueError("topk_rows: eout = c + (a - b) - D needs c")
    fn = {torch.float32: _lib.topk_rows_f32, torch.float64: _lib.topk_rows_f64}.get(a.dtype)
    if fn is None:
        raise ValueError(f"topk_rows: float32 or float64 only, got {a.dtype}")
    vals = torch.empty(n, k, dtype=a.dtype)
    idx = torch.empty(n, k, dtype=torch.int64)
    bad = torch.empty(n, dtype=torch.uint8)
    args = (_ptr(a), _ptr(b), _ptr(c), float(eta), float(scale), _ptr(out), _ptr(eout), d, k, _ptr(vals), _ptr(idx), _ptr(bad))
    if n == 1 and _lib.distopt_openmp():  # one row: its groups split over the threads
        threads = max(1, min(torch.get_num_threads(), d // (1 << 16) or 1))
        fn = {torch.float32: _lib.topk_row_f32, torch.float64: _lib.topk_row_f64}[a.dtype]
        if fn(*args, threads):
            raise MemoryError("topk_rows: the native kernel could not allocate its scratch")
        return vals, idx, bad.bool()
    threads = max(1, min(torch.get_num_threads(), n, n * d // (1 << 16) or 1))
    if threads == 1 or _lib.distopt_openmp():
        codes = [fn(*args, 0, n, threads)]
    else:  # no OpenMP: blocks of rows on a Python thread pool (ctypes releases the GIL)
        global _pool
        if _pool is None or _pool._max_workers < threads:  # type: ignore[attr-defined]
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="distopt-native")
        cuts = [n * t // threads for t in range(threads + 1)]
        codes = list(_pool.map(lambda t: fn(*args, cuts[t], cuts[t + 1], 1), range(threads)))
    if any(codes):
        raise MemoryError("topk_rows: the native kernel could not allocate its scratch rows")
    return vals, idx, bad.bool()
