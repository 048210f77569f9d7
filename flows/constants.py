"""Named constants of the flows, in one place (geometry constants live in :mod:`manifolds.constants`)."""

from __future__ import annotations

#: Smooth bound on coupling log-scales: ``s = B·tanh(ŝ/B)`` with ``B = LOG_SCALE_BOUND``. It keeps each layer
#: bi-Lipschitz (a factor of at most ``e^B`` per layer and direction, Liao & He's stability principle) without a
#: clamp: the map stays a smooth bijection with an exact log-det. ``B = 4`` lets a single layer scale by up to 55×.
LOG_SCALE_BOUND: float = 4.0

#: Hidden width of conditioner networks (the paper: two hidden layers of 128 with tanh).
DEFAULT_HIDDEN: int = 128

#: Number of hidden layers of an MLP / graph conditioner.
DEFAULT_HIDDEN_LAYERS: int = 2

#: Scale of the last conditioner layer at initialisation: the flow starts close to (not exactly at) the
#: identity, so deep stacks train stably while every parameter still receives a gradient.
OUTPUT_INIT_SCALE: float = 1e-2
