"""Weight sparsity per layer and overall, and remaining-weight counts, from a masks dict, from a
live masked model, or from exported plain weights.

Sparsity = pruned / total = 1 − density; remaining = weights kept (mask 1, or nonzero when
counting exported weights).
"""
import dataclasses

import keras
import numpy as np

from tf_lottery import masks as masks_lib
from tf_lottery.analysis._common import kernel_arrays


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Remaining and total weight counts per layer; everything else derives from them."""

    remaining: dict
    total: dict

    @property
    def remaining_count(self):
        return sum(self.remaining.values())

    @property
    def total_count(self):
        return sum(self.total.values())

    @property
    def density(self):
        """Fraction of all weights kept."""
        return self.remaining_count / self.total_count if self.total_count else 1.0

    @property
    def sparsity(self):
        """Fraction of all weights pruned."""
        return 1.0 - self.density

    def layer_densities(self):
        return {name: self.remaining[name] / n if n else 1.0 for name, n in self.total.items()}

    def layer_sparsities(self):
        return {name: 1.0 - d for name, d in self.layer_densities().items()}

    def as_dict(self):
        """Plain JSON-ready summary (what a round's metrics file stores)."""
        return {"sparsity": self.sparsity, "density": self.density,
                "remaining_count": self.remaining_count, "total_count": self.total_count,
                "layer_sparsities": self.layer_sparsities(),
                "layer_remaining": dict(self.remaining), "layer_total": dict(self.total)}


def sparsity_report(masks):
    """Counts of a masks dict {layer name: 0/1 array} (tf_lottery.masks.count per layer)."""
    remaining, total = {}, {}
    for name, mask in masks.items():
        remaining[name], total[name] = masks_lib.count({name: mask})
    return SparsityReport(remaining, total)


def model_sparsity(model):
    """Counts of a live model's masked layers under their rules' binary ticket masks."""
    return sparsity_report(masks_lib.get_masks(model))


def weights_sparsity(weights):
    """Counts of exact zeros in exported plain weights: a Keras model (every layer with a kernel;
    a masked layer counts its effective kernel) or a dict {layer name: kernel array}."""
    if isinstance(weights, keras.Model):
        weights = kernel_arrays(weights, effective=True)
    return sparsity_report({name: (np.asarray(w) != 0).astype(np.float32)
                            for name, w in weights.items()})
