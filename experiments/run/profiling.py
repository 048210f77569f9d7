"""Profiling helpers of the benchmarks: host reads of tensor values, kernel launches and peak memory of a call.

* :class:`HostReadCounter` counts the operations that read tensor values into Python (``.item()``, ``bool(t)``,
  ``.tolist()``, ...) and the copies of device tensors to the CPU: on CUDA each one blocks the host until the
  GPU has caught up (a device→host synchronisation). It works the same on every device, so the syncs of a
  training step can be counted, and located, on a machine without a GPU.
* :func:`count_kernel_launches` counts the CUDA launches of a call (on CPU: its top-level ATen operator calls).
* :func:`peak_memory` measures the peak memory of a call above what was allocated before it.
"""

from __future__ import annotations

import os
import resource
import sys
import warnings
import weakref
from collections import Counter
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

Tensor = torch.Tensor

#: functions that turn tensor values into Python values (each forces a device→host sync on CUDA), by name
HOST_READS: dict[Callable[..., Any], str] = {
    **{getattr(Tensor, name): f"Tensor.{name}" for name in (
        # the conversions of a tensor's values to Python objects
        "item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "__array__",
        # printing and formatting read the values too
        "__format__", "__repr__",
        # comparisons that answer with a Python bool
        "__contains__", "equal", "allclose", "is_nonzero")},
    **{getattr(torch, name): f"torch.{name}" for name in ("equal", "allclose", "is_nonzero")},
}

#: functions that copy a tensor to another device: counted when they copy a non-CPU tensor to the CPU
DEVICE_COPIES: dict[Callable[..., Any], str] = {Tensor.cpu: "Tensor.cpu", Tensor.to: "Tensor.to",
                                                Tensor.copy_: "Tensor.copy_"}

#: names of the CUDA runtime/driver calls that :func:`count_kernel_launches` counts (a graph replay is one call)
CUDA_LAUNCH_EVENTS = frozenset({"cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx",
                                "cudaGraphLaunch", "cudaMemcpyAsync", "cudaMemsetAsync"})

#: prefix of the profiler event of a call of a ``torch.compile``-generated graph (its CPU kernels are not events)
COMPILED_GRAPH_EVENT = "## Call CompiledFxGraph"

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_THIS_FILE = os.path.abspath(__file__)


def _is_cpu(t: Any) -> bool:
    return not isinstance(t, Tensor) or t.device.type == "cpu"


def _caller() -> str:
    """``file:line`` of the innermost frame outside torch and this module (paths relative to the working
    directory when below it)."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH_DIR)
                                 or os.path.abspath(frame.f_code.co_filename) == _THIS_FILE):
        frame = frame.f_back
    if frame is None:
        return "<torch>"
    path = frame.f_code.co_filename
    try:
        rel = os.path.relpath(path)
        path = rel if not rel.startswith(os.pardir) else path
    except ValueError:  # another drive (Windows)
        pass
    return f"{path}:{frame.f_lineno}"


class HostReadCounter(TorchFunctionMode):
    """Count the host reads of tensor values made inside a ``with`` block: the operations that force a
    device→host synchronisation on CUDA.

    Counted, on every device alike (on CPU this is how the syncs of a step are counted without a GPU):

    * reads of values into Python, :data:`HOST_READS`: ``Tensor.item``, ``bool(t)``, ``int(t)``, ``float(t)``,
      ``operator.index(t)`` (a tensor as a Python index: ``range(t)``, ``a_list[t]``), ``.tolist()``, ``.numpy()``,
      ``numpy.asarray(t)``, formatting and ``repr``, ``x in t``, ``torch.equal`` / ``allclose`` / ``is_nonzero``;
    * copies of a non-CPU tensor to the CPU: ``.cpu()``, ``.to('cpu')`` (any form of ``to`` whose result is on
      the CPU), ``cpu_tensor.copy_(device_tensor)``. A later read of the very tensor such a copy returned is not
      counted again, so ``t.cpu().numpy()`` counts once on CUDA as on CPU, where ``.cpu()`` is a no-op.

    A read of a CPU tensor counts even in a CUDA run (the counter cannot know which CPU values would live on a
    GPU in another run). Not counted: operations whose output *shape* depends on the values (``nonzero``,
    boolean-mask indexing, ``unique``, ``repeat_interleave`` without ``output_size``), which also synchronise on
    CUDA; ``torch.cuda.set_sync_debug_mode`` reports those on a GPU. Nor a tensor passed where a torch function
    takes a Python number (``torch.ones(n)`` with a tensor ``n``): torch's argument parser reads it in C++.
    Operations that torch runs inside another intercepted operation (e.g. the ``item`` inside
    ``Tensor.__format__``) are one read, and nothing the counter does itself counts (its bookkeeping runs with
    the mode switched off).

    Attributes:
        count: the number of host reads.
        where: ``Counter`` of ``"<operation> at <file>:<line>"``, the line being the innermost stack frame outside
            torch (and this module), so that ``where.most_common()`` names the culprits.

    Example:
        >>> t = torch.tensor([1.0, 2.0])
        >>> with HostReadCounter() as reads:
        ...     u = (t * 2).sum()  # pure tensor ops: not counted
        ...     v = u.item()
        ...     flag = bool(u > 0)
        >>> reads.count
        2
        >>> sorted(k.split(" at ")[0] for k in reads.where)
        ['Tensor.__bool__', 'Tensor.item']
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.where: Counter[str] = Counter()
        # id -> weak reference of the CPU copies counted already (tensors compare elementwise, hence no WeakSet)
        self._fetched: dict[int, weakref.ref] = {}

    def _record(self, name: str) -> None:
        self.count += 1
        self.where[f"{name} at {_caller()}"] += 1

    def _already_fetched(self, t: Any) -> bool:
        ref = self._fetched.get(id(t))
        return ref is not None and ref() is t

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        read = HOST_READS.get(func)
        if read is not None:
            if not (args and self._already_fetched(args[0])):
                self._record(read)
        else:
            copy = DEVICE_COPIES.get(func)
            if copy is not None and args:
                src = (args[1] if len(args) > 1 else kwargs.get("src")) if func is Tensor.copy_ else args[0]
                if not _is_cpu(src) and _is_cpu(out):
                    self._record(copy)
                    key = id(out)
                    self._fetched[key] = weakref.ref(out, lambda _, key=key: self._fetched.pop(key, None))
        return out


def _has_aten_ancestor(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def count_kernel_launches(fn: Callable[[], Any], device: torch.device | str) -> int:
    """Run ``fn()`` once under ``torch.profiler`` and count what it launches.

    * CUDA: the host-side launch calls, i.e. profiler events named in :data:`CUDA_LAUNCH_EVENTS`
      (``cudaLaunchKernel``, ``cuLaunchKernel``, ``cudaLaunchKernelExC``, ``cuLaunchKernelEx``,
      ``cudaMemcpyAsync``, ``cudaMemsetAsync``, and ``cudaGraphLaunch``: a CUDA-graph replay counts as one
      launch, whatever it holds).
    * CPU: the top-level ATen operator calls, i.e. events named ``aten::*`` with no ``aten::`` event among their
      ancestors (``aten::linear`` counts once, not with the ``aten::mm`` inside it; backward ops count, as they
      run under autograd nodes), plus one per call of a ``torch.compile``-generated graph
      (:data:`COMPILED_GRAPH_EVENT`; the C++ kernels inside are no profiler events, the ATen calls it makes,
      such as matrix products, count as ops). This is the CPU analogue of the launches: for eager code an upper
      bound on the kernels a CUDA run would launch (views and other metadata-only ops count here but launch
      nothing, and so do CPU-side ops such as a sampler that runs on the CPU in a CUDA run too).

    Example:
        >>> a, b = torch.ones(3), torch.ones(3)
        >>> count_kernel_launches(lambda: (a + b) * a - b, "cpu")
        3
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize(device)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.events()
    if cuda:
        return sum(e.name in CUDA_LAUNCH_EVENTS for e in events)
    return sum(e.name.startswith(("aten::", COMPILED_GRAPH_EVENT)) and not _has_aten_ancestor(e) for e in events)


def _rss_bytes() -> int | None:
    """The process's current resident set size (Linux), else ``None``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _max_rss_bytes() -> int:
    """The process's high-water resident set size (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def peak_memory(fn: Callable[[], Any], device: torch.device | str) -> int:
    """Peak memory of ``fn()`` in bytes.

    * CUDA: the peak of the memory the caching allocator holds while ``fn`` runs, **everything resident
      included** (model, data, optimizer state, and the private pool of a captured CUDA graph, whose
      intermediates a replay reuses without allocating): ``max(max_memory_allocated, max_memory_reserved)``
      after ``reset_peak_memory_stats``. This is what the process needs on the GPU, not the increment of one call
      (which reads ~0 for a graph replay).
    * CPU: a process-level upper bound, the process's high-water resident size after the call
      (``getrusage(RUSAGE_SELF).ru_maxrss``) minus its resident size before it (``/proc/self/statm``; where
      that does not exist, the high-water mark before). It includes whatever else the process does, cannot
      go below an earlier high-water mark, and memory that the C allocator keeps after ``free`` (see
      :mod:`experiments.run.allocator`) is reused without showing, so a repeated step often reads close to 0.
      ``torch.profiler``'s ``profile_memory`` would be exact but is far too slow for large graphs.

    Example:
        >>> peak_memory(lambda: torch.ones(1000), "cpu") >= 0
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # what is reserved now is in use (or a graph's pool)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device))
    before = _rss_bytes()
    if before is None:
        before = _max_rss_bytes()
    fn()
    return max(0, _max_rss_bytes() - before)


def high_water_growth(fn: Callable[[], Any]) -> int:
    """How far ``fn()`` raises the process's high-water resident size above the one before it, in bytes (CPU):
    the memory a step needs **above the process's peak so far** (e.g. a final evaluation above the training peak);
    0 when it stays within that peak.

    Example:
        >>> high_water_growth(lambda: None) >= 0
        True
    """
    before = _max_rss_bytes()
    fn()
    return max(0, _max_rss_bytes() - before)


def count_cuda_syncs(fn: Callable[[], Any], messages: list[str] | None = None) -> int | None:
    """Device synchronisations that ``fn()`` makes, as CUDA reports them (``torch.cuda.set_sync_debug_mode("warn")``
    warns at every synchronising call, including those :class:`HostReadCounter` cannot see: ``nonzero``, boolean
    masks, ``unique``, a blocking copy). ``None`` where CUDA is not available (count host reads instead). The
    warnings' texts (which call synchronised) are appended to ``messages`` if given.

    Example:
        >>> count_cuda_syncs(lambda: None) in (None, 0)
        True
    """

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(before)
    found = _sync_messages(caught)
    if messages is not None:
        messages.extend(found)
    return len(found)


def _sync_messages(caught: list) -> list[str]:
    """The sync-debug warnings among ``caught`` (their text names the synchronising call)."""
    # "called a synchronizing CUDA operation"; not the notice that the debug mode is a prototype feature
    return [str(w.message) for w in caught if str(w.message).lower().startswith("called a synchronizing")]
