"""Named constants of the VAEs, graph VAEs and graph generator, in one place, each with its reason."""

from __future__ import annotations

#: Paper's importance-sample count for the test log-likelihood (Bose et al. 2020, App. E; Burda et al. 2016).
IWAE_SAMPLES: int = 500

#: Upper bound on ``K_chunk × batch`` latent samples evaluated at once by the IWAE estimator; the estimator
#: processes the ``K`` samples in chunks of ``max(1, IWAE_MAX_SAMPLES_PER_CHUNK // batch)`` so that its peak
#: memory does not grow with ``K``.
IWAE_MAX_SAMPLES_PER_CHUNK: int = 65_536

#: Smooth bound on the norm of the encoder's mean in tangent coordinates: ``μ̃ = B·tanh(|m|/B)·m/|m|``.
#: The tangent norm is the geodesic distance, so the mean lies within distance B = 8 of the origin whatever the
#: curvature: 8/R curvature radii (R = sqrt(k)). For R ≥ 1 (the models' k ≥ 1) that is far inside float32's
#: reliable range for operations at base points away from the origin (ambient coordinates good to
#: ~6e-8·cosh²(8/R) ≤ 0.5 % relative; MATH.md §7); for R < 1 the bound allows more radii, and float64 is the
#: remedy. No bijection is clamped: the bound acts before the posterior.
MAX_TANGENT_NORM: float = 8.0

#: Posterior scales are ``softplus(s) + MIN_SCALE``: a floor that keeps ``log σ`` and ``1/σ`` finite.
MIN_SCALE: float = 1e-4

#: von Mises–Fisher posteriors (spheres) have concentration ``κ = softplus(s) + MIN_CONCENTRATION``: the
#: hyperspherical VAE's floor (Davidson et al. 2018 add 1), which keeps the posterior from collapsing to the uniform
#: law, where the KL's gradient in ``μ`` vanishes.
MIN_CONCENTRATION: float = 1.0

#: Likewise for the learnable standard deviation of the Gaussian likelihood.
MIN_GAUSSIAN_SCALE: float = 1e-3

#: The paper's curvature warm-up (MATH.md §5): ``R = WARMUP_START_RADIUS - epoch`` for ``WARMUP_EPOCHS``
#: epochs (R = 11, 10, ..., 2), ``k = R²``; afterwards ``R`` stays at ``WARMUP_FINAL_RADIUS`` (fixed) or
#: becomes learnable from there.
WARMUP_START_RADIUS: float = 11.0
WARMUP_EPOCHS: int = 10
WARMUP_FINAL_RADIUS: float = 2.0

#: Density-estimation defaults (paper App. E): coupling layers and hidden width of their s, t networks.
FLOW_LAYERS: int = 2
FLOW_HIDDEN: int = 128

#: Edge split of the graph-reconstruction experiment: 85 % train, 5 % validation, 10 % test edges.
VAL_FRACTION: float = 0.05
TEST_FRACTION: float = 0.10

#: Graph-reconstruction encoder width (paper App. E: GCN with 16 hidden units).
GRAPH_HIDDEN: int = 16

#: Graph-generation encoder width (paper App. E: GAT layers of 32) and attention heads.
GENERATOR_HIDDEN: int = 32
GAT_HEADS: int = 1

#: Structural node features of the generator (the graphs have no features of their own): one-hot degree
#: capped at ``DEGREE_FEATURE_CAP`` plus random-walk return probabilities for ``1..RANDOM_WALK_STEPS`` steps.
DEGREE_FEATURE_CAP: int = 16
RANDOM_WALK_STEPS: int = 8

#: Floor on the distance decoder's temperature, ``τ = softplus(·) + MIN_TEMPERATURE > 0`` (MATH.md §6).
MIN_TEMPERATURE: float = 1e-2

#: Gaussian-TV kernel bandwidths and histogram bins of the generation MMDs (as in GraphRNN / GRAN).
MMD_SIGMA_DEGREE: float = 1.0
MMD_SIGMA_CLUSTERING: float = 0.1
MMD_SIGMA_SPECTRAL: float = 1.0
CLUSTERING_BINS: int = 100
SPECTRAL_BINS: int = 200
#: GRAN's normalisation guard in the Gaussian-TV kernel (``x / (x.sum() + eps)``).
HISTOGRAM_EPS: float = 1e-6

#: Encoder inputs of the graph generator (``node_input``): ``"structural"`` (:func:`vae.generation.node_features`,
#: the default), ``"adjacency"`` (each node's row of the adjacency matrix zero-padded to the data set's largest
#: graph, the reference implementation's input), or ``"both"`` (the two concatenated).
NODE_INPUTS: tuple[str, ...] = ("structural", "adjacency", "both")

#: How a generated graph's edges are drawn from the decoded probabilities (``sampler``): ``"bernoulli"`` (every
#: pair independently, the paper's), ``"spanning-tree"`` (a random spanning tree of the complete graph drawn with
#: probability ∝ Π_{e∈T} p_e/(1-p_e), i.e. the independent-edge model conditioned on being a spanning tree), or
#: ``"max-spanning-tree"`` (that distribution's mode: the maximum-weight spanning tree under log-odds weights).
SAMPLERS: tuple[str, ...] = ("bernoulli", "spanning-tree", "max-spanning-tree")

# -- hierarchy metrics (vae/hierarchy.py) ---------------------------------------------------------------------
#: Graphs with at most this many nodes get exact MAP and distortion (every node a source: today's numbers, and
#: at most N²/2 distance ratios = 100 MB kept for the distortion's best scale). Larger graphs use a seeded sample.
HIERARCHY_EXACT_MAX_NODES: int = 5_000
#: Default number of sampled source nodes above the threshold (a BFS and a row of latent distances each; memory
#: ``sources × N`` float32 ratios for the distortion: 256 MB at 1M nodes; standard errors reported).
HIERARCHY_SOURCES: int = 64
#: Node pairs per call of ``manifold.dist`` (its float64 temporaries: ~90 MB at 16 latent dimensions).
HIERARCHY_DIST_CHUNK: int = 65_536

# -- hyperbolic embeddings (vae/embedding.py; Nickel & Kiela 2017) ------------------------------------------------
#: Negatives per directed training edge in the ranking loss (Nickel & Kiela 2017 use 10 in their experiments).
EMBEDDING_NEGATIVES: int = 10
#: Initial tangent coordinates at the origin uniform in ``[-s, s]`` (Nickel & Kiela 2017, §3: "uniformly from the
#: interval (-0.001, 0.001)"): every node starts near the origin, so early steps only separate them.
EMBEDDING_INIT_SCALE: float = 1e-3
