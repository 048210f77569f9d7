"""Named constants of the experiments (not of the library): the graph generator's training schedules."""

from __future__ import annotations

#: The reference implementation's two-stage schedule (joeybose/HyperbolicNF, graph generation): auto-encoder for
#: 50 epochs at Adam lr 1e-2, flow prior for 100 epochs at 1e-3, radius R = 2 (curvature k = R² = 4). Relative to
#: ``--epochs E --lr L`` (the command's defaults E = 100, L = 1e-2 give exactly those numbers): the auto-encoder
#: trains ``ceil(E · REFERENCE_AE_EPOCH_SHARE)`` epochs at ``L``, the flow ``E`` epochs at
#: ``L · REFERENCE_FLOW_LR_FACTOR``, so that short test runs keep the reference's proportions.
REFERENCE_AE_EPOCH_SHARE: float = 0.5
REFERENCE_FLOW_LR_FACTOR: float = 0.1
REFERENCE_RADIUS: float = 2.0
#: The paper's schedule as implemented here: both stages ``E`` epochs at ``L``, curvature fixed at k = 1.
PAPER_GENERATOR_CURVATURE: float = 1.0
SCHEDULES: tuple[str, ...] = ("paper", "reference")
