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

#: Rational-quadratic splines (Durkan et al. 2019) act on ``[-B, B]`` with ``B = SPLINE_BOUND`` and are the
#: identity outside (linear tails, slope 1, so the map is C¹ at ``±B``). ``B = 5`` covers a standard normal
#: base to 5σ (zuko's default bound); larger |x| pass through unchanged.
SPLINE_BOUND: float = 5.0

#: Default number of spline bins ``K`` (``3K - 1`` parameters per transformed coordinate).
SPLINE_BINS: int = 8

#: How the derivatives at the interval's ends are set (:func:`flows.splines.spline_knots`), and the number of raw parameters
#: per coordinate for ``K`` bins: ``"identity"`` (``δ_0 = δ_K = 1``, matching identity tails outside ``[-B, B]``;
#: ``3K - 1``), ``"periodic"`` (``δ_0 = δ_K`` one free value: a C¹ bijection of the circle ``[-B, B)`` with its
#: ends identified; ``3K``), ``"free"`` (``δ_0``, ``δ_K`` free: a bijection of ``[-B, B]`` fixing its ends; ``3K + 1``).
SPLINE_ENDS: dict[str, int] = {"identity": -1, "periodic": 0, "free": 1}

#: Smallest spline bin width and height, as a fraction of ``2B`` (nflows' and Durkan et al.'s 1e-3): every bin
#: keeps a positive size, so the knots stay distinct and the inverse's quadratic stays well conditioned.
SPLINE_MIN_BIN_SIZE: float = 1e-3

#: Smallest derivative of a spline at its interior knots (``δ = m + softplus(·)``, nflows' 1e-3): the map stays
#: strictly increasing with a finite log-derivative.
SPLINE_MIN_DERIVATIVE: float = 1e-3

# -- continuous normalizing flows (flows/continuous.py) ------------------------------------------------------

#: ODE solver of a CNF (a ``torchdiffeq`` method): Dormand–Prince 5(4) with adaptive steps, as in FFJORD.
CNF_METHOD: str = "dopri5"

#: Default relative / absolute local tolerances of the CNF's solver (float64). Measured on the shared flow suite
#: (float64, ‖w‖ ≤ 10, randomised O(1) vector fields, T ≈ 1): round trips within ~3e-10 relative, log-dets within
#: ~5e-9 of an autograd Jacobian of the solve (global error ≈ 3–50 × the local tolerance). For training in float32
#: pass looser ones (e.g. 1e-5), or rely on :data:`CNF_MIN_TOLERANCE`.
CNF_RTOL: float = 1e-10
CNF_ATOL: float = 1e-10

#: Per-dtype floor on the tolerances actually used: a float32 solve cannot reach float64 tolerances (the step
#: size would collapse), so float32 states are solved at ``max(tol, 1e-6)``.
CNF_MIN_TOLERANCE: dict[str, float] = {"float64": 1e-14, "float32": 1e-6, "float16": 1e-3, "bfloat16": 1e-2}

#: Stated accuracy of a CNF's numerical inverse (``inverse_tolerance``) and of its log-dets
#: (``logdet_tolerance``), as multiples of ``max(rtol, atol)``: the global error of an adaptive solve is a
#: modest multiple of its local tolerance for the O(1) fields and times of the documented working range
#: (measured ≤ 20× for coordinates, ≤ 60× for log-dets on the shared suite).
CNF_INVERSE_TOLERANCE_FACTOR: float = 1e2
CNF_LOGDET_TOLERANCE_FACTOR: float = 1e2

#: Step budget of one ODE solve (CNF and Riemannian flows): a solve that needs more vector-field evaluations stops
#: with a one-line ``RuntimeError`` instead of grinding (a stiff field, tolerances too tight for the dtype) or, under
#: ``python -O`` where torchdiffeq's step-size assertions are gone, looping for ever. A healthy solve of the shared
#: suite takes 30-150 evaluations (dopri5: 6 per step), so 20 000 is ~3 000 steps.
CNF_MAX_EVALUATIONS: int = 20_000

#: torchdiffeq methods with a fixed grid (``steps=`` of a CNF / Riemannian flow: ``steps`` equal steps over the
#: solve, a bounded cost whatever the field, e.g. for brute-force log-det checks far from the origin).
CNF_FIXED_METHODS: tuple[str, ...] = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams",
                                      "implicit_adams")

#: Initial end time ``T`` of a CNF block.
CNF_END_TIME: float = 1.0

# -- planar, Sylvester, i-ResNet: numerical inverses (flows/planar.py, flows/residual.py) ---------------------

#: Stated accuracy (``inverse_tolerance``: max abs error in the coordinates, float64, ``‖y‖ ≤ 100``) of one planar
#: or Sylvester layer's numerical inverse. Both reduce exactly to scalar monotone equations
#: ``s + a·tanh(c·s + d) = t`` (``1 + a·c > 0``), solved by bracketed Newton to a few ulps; the error left is
#: rounding amplified by the conditioning ``1/(1 + a·c·h′)`` of the layer (so the statement assumes a layer that
#: is not nearly singular, ``1 + a·c ≳ 1e-3``), measured ≤ 1e-12 for the randomised layers of the tests.
NUMERICAL_INVERSE_TOLERANCE: float = 1e-10

#: Iteration cap of the bracketed Newton solve. Every iteration at least halves the bracket (bisection
#: fallback), which starts at width ``2|a|``: 200 halvings reach any float64 resolution.
ROOT_SOLVE_MAX_ITER: int = 200

#: Lipschitz cap ``c`` of each linear layer of an i-ResNet block (Behrmann et al. 2019 use 0.9): ``W ↦ W·min(1,
#: c/σ_max(W))``, so with 1-Lipschitz activations ``Lip(F) ≤ c^L`` for ``L`` linear layers (0.729 for three).
IRESNET_LIPSCHITZ: float = 0.9

#: Stated accuracy of the i-ResNet fixed-point inverse (max abs error in the coordinates, float64). The
#: iteration ``x ← y − F(x)`` stops when ``‖Δx‖∞ ≤ tol·(1 − L)/L``, which bounds the error by ``tol`` (Banach).
IRESNET_INVERSE_TOLERANCE: float = 1e-10

#: Cap on fixed-point iterations (inverse and implicit backward): at ``L = 0.729`` reaching 1e-10 takes ~80.
IRESNET_MAX_ITER: int = 1000

#: Truncation error allowed in the exact-trace power series ``log det(I + J) = Σ_k (−1)^{k+1} tr(J^k)/k``: the
#: number of terms ``N`` is the smallest with ``n·L^{N+1}/((N+1)(1 − L)) ≤`` this (``|tr J^k| ≤ n·L^k``).
IRESNET_LOGDET_TOLERANCE: float = 1e-8

#: Russian-roulette estimator (Chen et al. 2019): terms always computed, then a geometric number of further
#: terms with success probability ``p`` (each later term reweighted by ``1/P(N ≥ k)``).
IRESNET_ROULETTE_EXACT_TERMS: int = 2
IRESNET_ROULETTE_P: float = 0.5

# -- self-normalizing flows (flows/selfnorm.py) ---------------------------------------------------------------

#: Initial ``W = I + ε`` of a self-normalizing layer, ``ε ~ N(0, σ²/fan_in)`` with ``σ = SELFNORM_INIT_NOISE``:
#: ``‖ε‖₂ ≈ 2σ = 0.1`` whatever D, so W starts well conditioned and ``R = Wᵀ`` is within ~0.2 of ``W⁻¹``.
SELFNORM_INIT_NOISE: float = 0.05

#: Weight λ of the per-layer reconstruction term ``λ Σ_k ‖g_k(f_k(h_k)) − h_k‖²`` (Keller et al.: λ = 1 for
#: small FC / conv models).
SELFNORM_RECONSTRUCTION_WEIGHT: float = 1.0

#: Negative-side slope α of the elementwise leaky ReLU between self-normalizing layers (log-det log α per
#: negative coordinate; α bounded away from 0 keeps the layer bi-Lipschitz).
LEAKY_RELU_SLOPE: float = 0.5

# -- Riemannian continuous flows (flows/rfm.py) ----------------------------------------------------------------

#: Below this ``s = |x̂|/√k`` the chart velocity's coefficients ``a(s) = asinh(s)/s`` and
#: ``b(s) = (s/√(1+s²) - asinh s)/s³`` use their series ``1 - s²/6 + 3s⁴/40`` and ``-1/3 + 3s²/10 - 15s⁴/56``
#: (omitted terms below 3e-13 at the threshold); the closed form of ``b`` cancels catastrophically there.
RFM_CHART_SERIES_THRESHOLD: float = 1e-2
#: Activations of the Riemannian flow's field MLP (:class:`flows.rfm.LorentzVectorField`), and the default. SiLU:
#: by flow matching on the H¹⁶ wrapped-normal mixture (3000 steps, width 128) the gap to the entropy fell from
#: +1.10 (tanh) to +0.57 nats, same cost per step; its field grows at most linearly, so no trajectory escapes in
#: finite time. tanh bounds the field's speed.
RFM_ACTIVATIONS: tuple[str, ...] = ("silu", "tanh")
RFM_ACTIVATION: str = "silu"
#: Couplings of base and data draws in :func:`flows.rfm.flow_matching_loss`: ``"independent"`` (Chen & Lipman),
#: or ``"ot"``: minibatch optimal transport (Tong et al. 2023, arXiv 2302.00482; Pooladian et al. 2023,
#: arXiv 2304.14772) under the squared geodesic distance. On the H¹⁶ wrapped-normal mixture (width 256, batch 512,
#: 1500 steps) OT blocks of 128 reached a gap of +0.27 nats against +0.44 for independent pairs.
FM_COUPLINGS: tuple[str, ...] = ("independent", "ot")
#: Points per exact assignment of the ``"ot"`` coupling: a batch is paired in blocks of this size, since the
#: Hungarian cost grows as block³ (scipy, 1 CPU thread, pairing a batch of 512 in H¹⁶: 1.2 / 2.6 / 6.0 / 15.6 ms
#: with blocks of 32 / 64 / 128 / 256; a flow-matching step of the 3 × 256 field takes 10 ms). On the H⁸ mixture
#: (1 000 steps at 5e-3, NLL on 500 test points) blocks of 32 / 64 / 128 gave 7.008 / 7.002 / 7.000 nats in
#: 11.8 / 13.0 / 15.7 s: the same NLL within noise. 64 keeps most of the saving. The price shows in higher
#: dimension: in ``hdensity``'s H¹⁶ mixture (10 000 steps) blocks of 64 end at +0.113 nats from the floor, 128 at
#: +0.085 (checkerboard +0.144 vs +0.133); pass ``ot_block=128`` for the last digits, 64 for speed.
FM_OT_BLOCK: int = 64

# -- flows on the circle, the torus and the sphere (flows/circular.py, flows/sphere.py) --------------------------

#: Largest radius of a Möbius transform's centre ``ω`` (Rezende et al. 2020 use 0.99): ``ω = R·u/√(1 + |u|²)``
#: keeps ``|ω| < R`` smoothly (no clamp), so a layer's derivative ``(1 - |ω|²)/|z - ω|²`` stays within
#: ``[(1 - R)/(1 + R), (1 + R)/(1 - R)] = [1/199, 199]``: bi-Lipschitz, with a finite log-det everywhere.
MOBIUS_MAX_RADIUS: float = 0.99

#: Seed of the fixed random rotations between the sphere's cylindrical coupling layers (layer ``i ≥ 1`` is conjugated
#: by the ``i``-th rotation drawn from it), so that no point of S² is a fixed point of every layer (each cylindrical
#: layer fixes its own two poles) and a rebuilt flow has the same rotations as the saved one.
SPHERE_ROTATION_SEED: int = 2020
