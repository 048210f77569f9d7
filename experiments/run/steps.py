"""One optimisation step as one unit of device work: eager, compiled whole (``torch.compile(fullgraph=True)``), and
on CUDA captured in a CUDA graph, so that an epoch of a full-batch model costs one graph replay.

A step is ``zero_grad → terms = loss_fn(*inputs) → terms[0].backward() → optimizer.step()``; for a CUDA graph
``loss_fn`` takes no arguments (it closes over the model's static inputs). It returns a 1-D tensor whose first entry is the loss to
minimise and whose other entries are terms to log. The step returns those terms, detached, on the device: reading
them is the caller's choice (:class:`experiments.run.protocol` reads them every few epochs, not every step).

Modes (``--compile`` and ``--cuda-graph`` of the command line):

* eager: the step as written;
* ``compile``: ``loss_fn`` through ``torch.compile(fullgraph=True)`` (forward and backward as compiled graphs; a
  graph break is an error, not a silent slowdown);
* ``cuda_graph`` (CUDA only, static shapes): the whole step, optimizer included (Adam with ``capturable=True``), is
  captured once after ``warmup`` eager steps and then replayed. The warm-up steps are real training steps, so the
  run trains the same number of steps either way. Everything that changes between steps must live in tensors the
  graph reads in place (parameters, optimizer state, the curvature ``k_raw``, the device RNG); a host-side change
  that the graph cannot see (a ``requires_grad`` flip, a new tensor) needs :meth:`TrainStep.reset`. A step that
  cannot be captured (it synchronises, e.g. a graph conditioner that normalises its graph on every call) is
  reported with a ``RuntimeWarning`` and run eagerly from then on.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch

Tensor = torch.Tensor

#: eager steps before a CUDA graph is captured (allocates gradients and optimizer state; lets cuBLAS/cuDNN pick)
CUDA_GRAPH_WARMUP = 3
#: inductor options of every compiled step: random numbers from torch's generator, as in eager mode
COMPILE_OPTIONS = {"fallback_random": True}


def compile_loss(loss_fn: Callable[..., Tensor], backend: str | None = None, *,
                 dynamic: bool = False, fullgraph: bool = True) -> Callable[..., Tensor]:
    """``torch.compile(loss_fn, fullgraph=True)``: the loss and (through AOTAutograd) its backward pass as graphs,
    failing loudly on a graph break. ``backend``: ``"inductor"`` (default) or e.g. ``"aot_eager"`` (no code
    generation: what the CPU tests use). Inductor draws random numbers with torch's own generator
    (``fallback_random``), so a compiled run uses the posterior samples and negatives of the eager run with the same
    seed and differs from it by rounding only. ``dynamic=True``: shapes that vary between calls, and graph breaks
    allowed (for losses whose inputs come from the host in pieces, as graph-gen's). ``fullgraph=False``: graph
    breaks allowed at static shapes (the flows benchmark's fallback for a peer that cannot be captured whole)."""
    backend = backend or "inductor"
    options = dict(COMPILE_OPTIONS) if backend == "inductor" else None
    return torch.compile(loss_fn, fullgraph=fullgraph and not dynamic, backend=backend, dynamic=dynamic,
                         options=options)


class TrainStep:
    """A training step for ``params`` with optimizer ``opt`` and loss ``loss_fn`` (see the module docstring).

    Example:
        >>> lin = torch.nn.Linear(3, 1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> opt = torch.optim.Adam(lin.parameters(), lr=0.1)
        >>> step = TrainStep(opt, lambda: ((lin(x) - y) ** 2).mean().reshape(1))
        >>> first = step()
        >>> bool(step()[0] < first[0])
        True
    """

    def __init__(self, opt: torch.optim.Optimizer, loss_fn: Callable[[], Tensor], *, compile: bool = False,
                 cuda_graph: bool = False, backend: str | None = None, warmup: int = CUDA_GRAPH_WARMUP) -> None:
        self.opt = opt
        self.loss_fn = compile_loss(loss_fn, backend) if compile else loss_fn
        if cuda_graph and not torch.cuda.is_available():
            raise ValueError("a CUDA graph needs a CUDA device; run without --cuda-graph on this machine")
        self.cuda_graph = cuda_graph
        self.warmup = max(1, int(warmup))
        self.reset()

    def reset(self) -> None:
        """Forget a captured graph (it is captured again after ``warmup`` eager steps)."""
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: Tensor | None = None
        self._eager_steps = 0
        self._stream = torch.cuda.Stream() if self.cuda_graph else None

    def _step(self, *inputs: Tensor) -> Tensor:
        self.opt.zero_grad(set_to_none=True)
        terms = self.loss_fn(*inputs)
        terms[0].backward()
        self.opt.step()
        return terms.detach()

    def __call__(self, *inputs: Tensor) -> Tensor:
        """One step; ``inputs`` are passed to ``loss_fn`` (not with a CUDA graph, whose inputs are fixed)."""
        if not self.cuda_graph:
            return self._step(*inputs)
        if inputs:
            raise ValueError("a CUDA-graph step takes no inputs: its loss_fn must read static tensors")
        if self._graph is None and self._eager_steps < self.warmup:
            # warm-up on a side stream (as torch.cuda.graphs recommends), so its allocations stay out of the graph
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                out = self._step()
            torch.cuda.current_stream().wait_stream(self._stream)
            self._eager_steps += 1
            return out
        if self._graph is None:
            self.opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self._out = self._step()
            except RuntimeError as err:  # the step synchronises or changes shape: it cannot be captured
                warnings.warn(f"the training step cannot be captured in a CUDA graph ({str(err).splitlines()[0]}); "
                              "training goes on without one (run with --cuda-graph off to silence this)",
                              RuntimeWarning, stacklevel=2)
                torch.cuda.synchronize()
                self.cuda_graph = False
                self.opt.zero_grad(set_to_none=True)
                return self._step()
            self._graph = graph
        self._graph.replay()
        return self._out.clone()  # the graph overwrites its output at the next replay


def adam(params, lr: float, *, weight_decay: float = 0.0, capturable: bool = False) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``weight_decay=0``) or, with ``weight_decay=λ > 0``, ``torch.optim.AdamW``: Adam with
    decoupled weight decay (Loshchilov & Hutter 2019), each step ``θ ← θ − lr·λ·θ`` besides the Adam update
    ``θ ← θ − lr·m̂/(√v̂ + ε)``, for every parameter that has a gradient. Fused (one kernel for all parameters)
    where torch has a fused kernel for these parameters (CPU and CUDA floating-point tensors, torch >= 2.4), the
    loop implementation otherwise.

    ``capturable=True`` keeps the step count on the device, so the update can be captured in a CUDA graph
    (:class:`experiments.run.steps.TrainStep`). The same update rule; for the small models of the graph runs the fused step is about 4× faster (0.13 vs
    0.57 ms for a 2-layer WHC graph VAE on this 2-core machine), which is a few percent of an epoch.

    Example:
        >>> opt = adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
        >>> type(opt).__name__, opt.defaults["lr"]
        ('Adam', 0.001)
        >>> type(adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3, weight_decay=0.1)).__name__
        'AdamW'
    """
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay}")
    params = list(params)
    cls, extra = (torch.optim.AdamW, {"weight_decay": weight_decay}) if weight_decay > 0 else (torch.optim.Adam, {})
    # torch checks devices and dtypes for the fused kernel only at the first step, so check them here
    if all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return cls(params, lr=lr, fused=True, capturable=capturable, **extra)
        except (RuntimeError, TypeError, ValueError):  # a torch without a fused CPU kernel (< 2.4)
            pass
    return cls(params, lr=lr, capturable=capturable, **extra)
