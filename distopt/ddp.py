"""Every method and compressor inside real PyTorch DistributedDataParallel, as a comm hook.

(No ``from __future__ import annotations`` here: DDP checks the hook's annotations as objects.)

>>> state = distopt.ddp.CommState(method="ef21", compressor="topk:ratio=0.01")
>>> model.register_comm_hook(state, distopt.ddp.comm_hook)

Each rank is one worker of the method (specs/ef-family.md §3): for a gradient bucket it runs
``worker_step`` on its local gradient, the payloads travel by all-reduce (summable payloads:
identity, unscaled fp16/bf16, shared-seed Rand-K) or all-gather (everything else), every rank
decodes the same aggregate and runs the same ``server_step`` -- the server state is
replicated -- and the hook returns the method's direction, which the user's optimizer applies
as the gradient. Same method, same seed, same data: same iterates as the simulator.

State is stored per parameter (keyed by parameter name when ``model=`` is given, else by
order of first appearance), so DDP's bucket rebuild after the first iteration -- the trap
torch's PowerSGD hook keys around with bucket indices -- cannot reset or mix it; a bucket's
state is gathered from, and scattered back to, its parameters' slices on every call. EF21's
first call sends the uncompressed gradient to initialise, as in the simulator. Each rank's
worker state is its own: every rank saves and loads its own ``state_dict()``.

``granularity="flat"`` compresses each bucket as one vector; ``"layerwise"`` compresses each
parameter's gradient on its own (per-layer Top-K etc.). Randomness is counter-based:
Noise(seed, step, rank), so ``state_dict()``/``load_state_dict()`` (tensors and plain types
only, ``torch.load(weights_only=True)`` friendly) resume bit-exactly.

Methods in model units (EF14: D = C(e + lr g)) need ``lr=`` (the optimizer's learning rate):
the hook returns mean D / lr, so SGD(lr) applies exactly x -= mean D.
Collectives run inside the hook and it returns a completed future (no overlap with backward).
"""
import time
import zlib
from typing import Any, Literal, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ._alloc import keep_freed_memory
from ._tree import tree_leaves, tree_map
from .compressors import Compressor
from .methods import Method
from .methods import make as make_method
from .noise import Noise

__all__ = ["CommState", "comm_hook"]


def _slice_tree(tree: Any, start: int, stop: int) -> Any:
    return tree_map(lambda t: t[..., start:stop], tree)


def _gather(state: "CommState", kind: str, keys: list[str], comp_key: str) -> Any:
    """A bucket's flat state: the flat tensors themselves when this bucket wrote them last (no
    copy), else the per-parameter slices concatenated (after a bucket rebuild or a resume)."""
    if all(state._owner.get(k) == comp_key for k in keys) and (kind, comp_key) in state._flat:
        return state._flat[(kind, comp_key)]
    return _cat_trees([getattr(state, kind)[k] for k in keys])


def _cat_trees(trees: Sequence[Any]) -> Any:
    return tree_map(lambda *ts: torch.cat(ts, dim=-1), *trees)


class CommState:
    """The hook's state. ``method``/``compressor``: spec strings or built objects.

    ``weights``: EF21-W's smoothness constants L_1..L_n (one per rank). ``model``: the module
    (or its ``named_parameters()``) to key state by parameter name. ``state_dtype``: keep the
    method's state in this dtype instead of the gradient's (e.g. float32 for bf16 grads).
    """

    def __init__(self, method: str | Method = "ef21", compressor: str | Compressor = "identity",
                 process_group: Optional[dist.ProcessGroup] = None, seed: int = 0,
                 granularity: Literal["flat", "layerwise"] = "flat", lr: Optional[float] = None,
                 weights: Optional[Sequence[float]] = None, model: Any = None,
                 state_dtype: Optional[torch.dtype] = None):
        if granularity not in ("flat", "layerwise"):
            raise ValueError(f"granularity must be 'flat' (per bucket) or 'layerwise' (per parameter), got {granularity!r}")
        keep_freed_memory()  # bucket-sized temporaries every step: reuse freed memory (distopt/_alloc.py)
        self.process_group = process_group
        self.world = dist.get_world_size(process_group) if dist.is_initialized() else 1
        self.rank = dist.get_rank(process_group) if dist.is_initialized() else 0
        ctx: dict[str, Any] = {"n": self.world}
        if weights is not None:
            if len(weights) != self.world:
                raise ValueError(f"weights: one smoothness constant per rank ({self.world}), got {len(weights)}")
            ctx["smoothness"] = tuple(float(w) for w in weights)
        self.method = make_method(method, compressor, **ctx)
        if self.method.name == "ef21-w" and weights is None:
            raise ValueError("ef21-w needs each rank's smoothness constant: CommState(..., weights=[L_1, ..., L_n])")
        if self.method.model_units and not (lr is not None and lr > 0):
            raise ValueError(f"{self.method.name} works in model units (D = C(e + lr g)): pass lr=<the optimizer's "
                             "learning rate> to CommState")
        self.lr = float(lr) if lr is not None else 1.0
        self.seed = int(seed)
        self.granularity = granularity
        self.state_dtype = state_dtype
        self.step = 0
        self.bits_sent = 0  # cumulative uplink bits of this rank (all buckets)
        self.bits_last_step = 0  # uplink bits of this rank in the last completed step
        self._step_bits = 0
        # seconds spent, cumulative: worker step (compress + own decompress), collectives,
        # decoding the gathered payloads, server step -- for the breakdown in `distopt bench ddp`
        self.timings = {"worker": 0.0, "communicate": 0.0, "decode": 0.0, "server": 0.0}
        self.worker: dict[str, Any] = {}  # parameter key -> worker state slice (comp field excluded)
        self.server: dict[str, Any] = {}  # parameter key -> server state slice
        self.comp: dict[str, Any] = {}  # bucket / parameter key -> compressor state (PowerSGD's Q)
        self._names: dict[int, str] = {}
        self._appearance = 0
        self._saved: Optional[dict] = None
        self._flat: dict = {}  # (kind, bucket key) -> that bucket's flat state, whose views are in worker/server
        self._owner: dict[str, str] = {}  # parameter key -> the bucket whose flat state holds its slice
        self._order: dict[str, int] = {}  # key -> canonical position (model order, else first appearance)
        if model is not None:
            named = model.named_parameters() if hasattr(model, "named_parameters") else model
            for i, (name, p) in enumerate(named):
                self._names[id(p)] = name
                self._order[name] = i

    # -- keys -------------------------------------------------------------------------------
    def _key(self, p: Tensor) -> str:
        k = self._names.get(id(p))
        if k is None:
            k = f"param{self._appearance}"
            self._appearance += 1
            self._names[id(p)] = k
            self._order[k] = len(self._order) + 10**9  # after any named parameter
        return k

    def _noise(self, key: str) -> Noise:
        return Noise(self.seed, self.step, self.rank, self.world).fork(zlib.crc32(key.encode()))

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Tensors and plain types only (``torch.load(..., weights_only=True)`` friendly)."""
        def copies(states: dict) -> dict:  # the hook updates worker states in place (donated to
            # the step): a dict kept in memory must not change with the next steps
            return {k: [t.clone() for t in tree_leaves(v)] for k, v in states.items()}

        return {
            "step": self.step, "bits_sent": self.bits_sent, "method": self.method.spec,
            "compressor": self.method.compressor.spec, "seed": self.seed, "granularity": self.granularity,
            "worker": copies(self.worker), "server": copies(self.server), "comp": copies(self.comp),
        }

    def load_state_dict(self, sd: dict) -> None:
        """Resume: states are re-attached to their parameters on the next hook call."""
        for field in ("method", "compressor", "granularity"):
            mine = {"method": self.method.spec, "compressor": self.method.compressor.spec,
                    "granularity": self.granularity}[field]
            if sd.get(field) != mine:
                raise ValueError(f"checkpoint has {field} {sd.get(field)!r}, this CommState has {mine!r}")
        self.step, self.bits_sent = int(sd["step"]), int(sd["bits_sent"])
        self.worker, self.server, self.comp = {}, {}, {}
        self._flat, self._owner = {}, {}
        self._saved = sd


def _from_leaves(leaves: list, like: Any) -> Any:
    it = iter(leaves)
    return tree_map(lambda t: next(it).to(device=t.device, dtype=t.dtype), like)


def _resume(state: CommState, work: Tensor, keys: list[str], offsets: list[int], comp_key: str) -> None:
    """Rebuild these parameters' saved states; a dry init on this bucket gives the structure."""
    method, saved = state.method, state._saved
    sent0, w0 = method.init_worker(work, state._noise(comp_key), state.lr)
    _, s0 = method.init_server(sent0.value, state.lr)
    for k, a, b in zip(keys, offsets, offsets[1:]):
        state.worker[k] = _from_leaves(saved["worker"][k], _slice_tree(_strip(w0), a, b))
        state.server[k] = _from_leaves(saved["server"][k], _slice_tree(s0, a, b))
    comp0 = w0.comp if hasattr(w0, "_fields") and "comp" in w0._fields else ()
    state.comp[comp_key] = _from_leaves(saved["comp"].get(comp_key, []), comp0)


def _collect(state: CommState, sent, numel: int, dtype, key: str) -> Tensor:
    """(1/n) sum_j a_j value_j over ranks, from the payloads (all-reduce or all-gather)."""
    method, group, world = state.method, state.process_group, state.world
    weights = method.weights(torch.arange(world))
    if world == 1:
        return sent.value * (float(weights[0]) if weights is not None else 1.0)
    codec = sent.codec
    t0 = time.perf_counter()
    if codec.summable and weights is None:
        summed = []
        for t in sent.payload:  # 16-bit payloads are summed in float32 (gloo has no bf16 sum)
            acc = t.to(torch.float32) if t.dtype in (torch.float16, torch.bfloat16) else t.clone()
            dist.all_reduce(acc, group=group)
            summed.append(acc)
        t1 = time.perf_counter()
        out = codec.decompress(tuple(summed), numel, state._noise(key), dtype) / world
        state.timings["communicate"] += t1 - t0
        state.timings["decode"] += time.perf_counter() - t1
        return out
    gathered = [_all_gather_any(t, group, world) for t in sent.payload]  # per tensor: list over ranks
    t1 = time.perf_counter()
    state.timings["communicate"] += t1 - t0
    total = torch.zeros(numel, dtype=dtype, device=sent.payload[0].device)  # (not sent.value: it may decode lazily)
    for j in range(world):  # sparse payloads add only their own coordinates, already divided by n
        noise = Noise(state.seed, state.step, j, world).fork(zlib.crc32(key.encode()))
        codec.decompress_add(total, tuple(g[j] for g in gathered), numel, noise,
                             (float(weights[j]) if weights is not None else 1.0) / world)
    state.timings["decode"] += time.perf_counter() - t1
    return total


def _all_gather_any(t: Tensor, group, world: int) -> list[Tensor]:
    """all_gather of one payload tensor, whatever its dtype (sent as raw bytes: gloo has no
    int16 or bool collectives) and shape (may differ across ranks: padded, then trimmed)."""
    raw = t.contiguous().reshape(-1).view(torch.uint8)
    meta = torch.tensor(list(t.shape) + [0] * (6 - t.dim()) + [t.dim(), raw.numel()], dtype=torch.int64)
    metas = [torch.empty_like(meta) for _ in range(world)]
    dist.all_gather(metas, meta, group=group)
    width = max(int(m[-1]) for m in metas)
    padded = torch.zeros(width, dtype=torch.uint8, device=t.device)
    padded[:raw.numel()] = raw
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    tensors = []
    for o, m in zip(out, metas):
        ndim, nbytes = int(m[-2]), int(m[-1])
        tensors.append(o[:nbytes].view(t.dtype).reshape(m[:ndim].tolist()))
    return tensors


def _run(state: CommState, grad: Tensor, keys: list[str], sizes: list[int], comp_key: str) -> Tensor:
    """One method round on a flat ``grad`` covering the parameters ``keys`` (sizes ``sizes``)."""
    method = state.method
    work = grad if state.state_dtype is None else grad.to(state.state_dtype)
    noise = state._noise(comp_key)
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    saved = getattr(state, "_saved", None)
    if keys[0] not in state.worker and saved is not None and keys[0] in saved["worker"]:
        _resume(state, work, keys, offsets, comp_key)
    fresh = [k not in state.worker for k in keys]
    if any(fresh) and not all(fresh):
        raise RuntimeError("a bucket mixes parameters with and without state; this should not happen -- report it")
    t0 = time.perf_counter()
    if all(fresh):
        sent, w_new = method.init_worker(work, noise, state.lr)
        # owned copies: EF21's g_i^0 is the gradient itself, and ``work`` is DDP's bucket buffer,
        # which DDP refills with the next gradients when it keeps its buckets (no rebuild after
        # step 0, e.g. find_unused_parameters=True) -- the state must not live there
        w_new = tree_map(torch.clone, w_new)
        state.timings["worker"] += time.perf_counter() - t0
        agg = _collect(state, sent, grad.numel(), work.dtype, comp_key)
        t1 = time.perf_counter()
        direction, s_new = method.init_server(agg, state.lr)
    else:
        w = _gather(state, "worker", keys, comp_key)
        if hasattr(w, "_fields") and "comp" in w._fields:
            w = w._replace(comp=state.comp.get(comp_key, ()))
        # donated: w is the state's own flat tensors (or a fresh concatenation of its slices), and
        # nothing reads the old values after the step (state_dict() hands out copies)
        sent, w_new = method.worker_step(work, w, noise, state.lr, donate=True)
        state.timings["worker"] += time.perf_counter() - t0
        agg = _collect(state, sent, grad.numel(), work.dtype, comp_key)
        t1 = time.perf_counter()
        direction, s_new = method.server_step(agg, _gather(state, "server", keys, comp_key), state.lr)
    if hasattr(w_new, "_fields") and "comp" in w_new._fields:
        state.comp[comp_key] = w_new.comp
    w_core = _strip(w_new)
    for k, a, b in zip(keys, offsets, offsets[1:]):
        state.worker[k] = _slice_tree(w_core, a, b)
        state.server[k] = _slice_tree(s_new, a, b)
        state._owner[k] = comp_key  # the slices are views of this bucket's flat state
    state._flat[("worker", comp_key)], state._flat[("server", comp_key)] = w_core, s_new
    state._step_bits += sent.bits
    out = direction / state.lr if method.model_units else direction
    state.timings["server"] += time.perf_counter() - t1
    return out.to(grad.dtype)


def _strip(w: Any) -> Any:
    """Worker state without its compressor state (kept per bucket, not per coordinate)."""
    if hasattr(w, "_fields") and "comp" in w._fields:
        return w._replace(comp=())
    return w


def comm_hook(state: "CommState", bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """``model.register_comm_hook(state, comm_hook)``: run the method on this bucket."""
    buf = bucket.buffer()
    params = bucket.parameters()
    grads = bucket.gradients()
    keys = [state._key(p) for p in params]
    # offsets of each parameter's gradient inside the flat bucket buffer
    esz = buf.element_size()
    starts = [(g.data_ptr() - buf.data_ptr()) // esz for g in grads]
    sizes = [g.numel() for g in grads]
    if state.granularity == "flat":
        # compress the bucket in a canonical parameter order: DDP rebuilds buckets after the
        # first iteration (and again after a restart), which reorders them; the method must not
        # see a different vector because of that
        order = sorted(range(len(keys)), key=lambda j: state._order[keys[j]])
        canon = [keys[j] for j in order]
        if order == list(range(len(keys))) and starts == [sum(sizes[:j]) for j in range(len(sizes))] \
                and sum(sizes) == buf.numel():
            result = _run(state, buf, canon, sizes, "|".join(canon))
        else:
            flat = torch.cat([buf[starts[j]:starts[j] + sizes[j]] for j in order])
            out = _run(state, flat, canon, [sizes[j] for j in order], "|".join(canon))
            result = buf.clone()
            pos = 0
            for j in order:
                result[starts[j]:starts[j] + sizes[j]] = out[pos:pos + sizes[j]]
                pos += sizes[j]
    else:  # layerwise: one round per parameter
        result = torch.empty_like(buf)
        for k, a, m in zip(keys, starts, sizes):
            result[a:a + m] = _run(state, buf[a:a + m], [k], [m], k)
    if bucket.is_last():
        state.bits_sent += state._step_bits
        state.bits_last_step = state._step_bits
        state._step_bits = 0
        state.step += 1
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(result)
    return fut
