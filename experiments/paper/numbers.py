"""The paper's numbers (Bose et al., ICML 2020, camera-ready), copied from ``shared/docs/EXPERIMENTS.md``.

Each entry maps a model (paper name) to ``(mean, std)`` (``None`` = the paper reports "*", numerically unstable).
"""

from __future__ import annotations

MODELS5 = ("N-VAE", "H-VAE", "NC", "TC", "WHC")
MODELS3 = ("NC", "TC", "WHC")

#: Table 1, BDP test log-likelihood, by latent dim
TABLE1 = {
    2: {"N-VAE": (-55.4, 0.2), "H-VAE": (-54.9, 0.3), "NC": (-55.4, 0.4), "TC": (-54.9, 0.1), "WHC": (-55.1, 0.4)},
    4: {"N-VAE": (-55.2, 0.3), "H-VAE": (-55.4, 0.2), "NC": (-54.7, 0.1), "TC": (-55.4, 0.1), "WHC": (-55.2, 0.2)},
    6: {"N-VAE": (-56.1, 0.2), "H-VAE": (-58.0, 0.2), "NC": (-55.2, 0.3), "TC": (-57.5, 0.2), "WHC": (-56.9, 0.4)},
}

#: Table 2, MNIST test log-likelihood (full 60k/10k MNIST in the paper), by latent dim
TABLE2 = {
    2: {"N-VAE": (-139.5, 1.0), "H-VAE": None, "NC": (-139.2, 0.4), "TC": None, "WHC": (-136.5, 2.1)},
    4: {"N-VAE": (-115.6, 0.2), "H-VAE": (-113.7, 0.9), "NC": (-115.2, 0.6), "TC": (-112.5, 0.2), "WHC": (-112.8, 0.5)},
    6: {"N-VAE": (-100.0, 0.02), "H-VAE": (-99.8, 0.2), "NC": (-98.7, 0.3), "TC": (-99.3, 0.2), "WHC": (-99.4, 0.2)},
}

#: Table 3, graph reconstruction: dataset -> metric -> model -> (mean, std)
TABLE3 = {
    "dis-i": {"auc": {"N-VAE": (0.90, 0.01), "H-VAE": (0.91, 0.005), "NC": (0.92, 0.01), "TC": (0.93, 0.01),
                      "WHC": (0.93, 0.01)},
              "ap": {"N-VAE": (0.92, 0.01), "H-VAE": (0.92, 0.005), "NC": (0.93, 0.01), "TC": (0.93, 0.01),
                     "WHC": (0.94, 0.01)}},
    "dis-ii": {"auc": {"N-VAE": (0.92, 0.01), "H-VAE": (0.92, 0.004), "NC": (0.95, 0.004), "TC": (0.96, 0.01),
                       "WHC": (0.96, 0.01)},
               "ap": {"N-VAE": (0.91, 0.01), "H-VAE": (0.91, 0.01), "NC": (0.93, 0.01), "TC": (0.95, 0.01),
                      "WHC": (0.96, 0.01)}},
}

#: Table 4, random-tree generation: metric -> model -> (mean, std); accuracy in %
TABLE4 = {
    "accuracy": {"NC": (56.6, 5.5), "TC": (32.1, 1.9), "WHC": (62.1, 10.9)},
    "avg_triangles": {"NC": (40.9, 42.7), "TC": (98.3, 89.5), "WHC": (21.1, 13.4)},
    "avg_clustering": {"NC": (0.34, 0.10), "TC": (0.25, 0.12), "WHC": (0.13, 0.07)},
}

#: Figure 5, lobster generation (read off a bar chart, ±0.005; no stds): metric -> model -> value; accuracy as a
#: fraction
FIGURE5 = {
    "mmd_degree": {"NC": 0.47, "TC": 0.39, "WHC": 0.41},
    "mmd_clustering": {"NC": 1.02, "TC": 1.02, "WHC": 0.96},
    "mmd_spectral": {"NC": 0.50, "TC": 0.40, "WHC": 0.39},
    "accuracy": {"NC": 0.00, "TC": 0.17, "WHC": 0.12},
}
