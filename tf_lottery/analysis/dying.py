"""Dying edges of edge-popup searches (soft iEP paper, Sec. 3, Eq. 2): d_t = |{x ∈ m_≤t : x = 0}|
/ |θ0|, the fraction of edges no mask m_1 … m_t has selected so far, with m_≤t = Σ_i m_i (a running
OR). After the first mask (the paper's d_0) it equals that mask's prune fraction; it never
increases.

For hard iEP, whose cycle i searches only m_{i−1}⊙θ0 (the layers' `mask` variables), the paper
(Sec. 5, Fig. 5a) plots two counts per cycle:
* apparent: the edges of the search space m_{i−1} never selected, over |m_{i−1}| (Eq. 2 with θ0
  replaced by the search space);
* worst case: every edge masked by earlier cycles also counts as dying, over |θ0|.
For EP and soft iEP the search space is everything and both equal d_t.
"""
import dataclasses

import numpy as np

from tf_lottery.errors import ConfigError
from tf_lottery.layers.mask_rules import TopKScores
from tf_lottery.layers.masked import masked_layers


@dataclasses.dataclass(frozen=True)
class DyingStats:
    """Edge counts over all layers: never selected, never selected inside the search space,
    outside the search space, the search space's size and all edges."""

    never_selected: int
    search_space_never_selected: int
    outside_search_space: int
    search_space_size: int
    total: int
    layer_dying_ratios: dict

    @property
    def dying_ratio(self):
        """Eq. 2: never-selected edges over all edges."""
        return self.never_selected / self.total if self.total else 0.0

    @property
    def apparent_dying_ratio(self):
        """Never-selected edges of the search space over the search space's size."""
        size = self.search_space_size
        return self.search_space_never_selected / size if size else 0.0

    @property
    def worst_case_dying_ratio(self):
        """Edges outside the search space plus never-selected ones inside it, over all edges."""
        dying = self.outside_search_space + self.search_space_never_selected
        return dying / self.total if self.total else 0.0

    def as_dict(self):
        return {"dying_ratio": self.dying_ratio,
                "apparent_dying_ratio": self.apparent_dying_ratio,
                "worst_case_dying_ratio": self.worst_case_dying_ratio}


def dying_stats(ever_selected, search_space=None):
    """DyingStats of {layer name: 0/1 array, 1 where the edge was selected at least once}; the
    search space {layer name: 0/1 array} defaults to every edge."""
    search_space = search_space or {}
    unknown = sorted(set(search_space) - set(ever_selected))
    if unknown:
        raise ConfigError(f"search_space names layers without selections: {unknown[:5]}")
    never = inside_never = outside = space_size = total = 0
    layer_ratios = {}
    for name, selected in ever_selected.items():
        dead = np.asarray(selected) == 0
        space = (np.asarray(search_space[name]) != 0 if name in search_space
                 else np.ones(dead.shape, dtype=bool))
        if space.shape != dead.shape:
            raise ConfigError(f"search space of {name} has shape {space.shape}, its selections "
                              f"{dead.shape}")
        never += int(dead.sum())
        inside_never += int((dead & space).sum())
        outside += int((~space).sum())
        space_size += int(space.sum())
        total += dead.size
        layer_ratios[name] = float(dead.mean()) if dead.size else 0.0
    return DyingStats(never, inside_never, outside, space_size, total, layer_ratios)


class DyingRatioTracker:
    """Running OR of a sequence of masks dicts (one per step or epoch) and its dying ratio."""

    def __init__(self, search_space=None):
        self.search_space = (None if search_space is None else
                             {name: np.asarray(m) != 0 for name, m in search_space.items()})
        self.ever_selected = None
        self.steps = 0

    def update(self, masks):
        """Add one masks dict {layer name: 0/1 array}; returns d_t after it."""
        selected = {name: np.asarray(m) != 0 for name, m in masks.items()}
        if self.ever_selected is None:
            self.ever_selected = selected
        else:
            if set(selected) != set(self.ever_selected):
                raise ConfigError("every masks dict must name the same layers")
            self.ever_selected = {name: self.ever_selected[name] | selected[name]
                                  for name in selected}
        self.steps += 1
        return self.dying_ratio

    def stats(self):
        if self.ever_selected is None:
            raise ConfigError("no masks tracked yet: call update(masks) first")
        return dying_stats(self.ever_selected, self.search_space)

    @property
    def dying_ratio(self):
        return self.stats().dying_ratio


def _topk_layers(model):
    layers = [layer for layer in masked_layers(model) if isinstance(layer.mask_rule, TopKScores)]
    if not layers:
        raise ConfigError("the model has no TopKScores layer, so no edge-popup selections")
    return layers


def model_dying_stats(model):
    """DyingStats from each TopKScores layer's `ever_selected` variable (the running OR of the
    masks of every training forward pass), with the layer's `mask` as hard iEP's search space."""
    layers = _topk_layers(model)
    return dying_stats({layer.name: layer.ever_selected.numpy() for layer in layers},
                       {layer.name: layer.mask.numpy() for layer in layers})


def dying_ratio(model):
    """Eq. 2 over every TopKScores layer of a live model."""
    return model_dying_stats(model).dying_ratio


def reset_ever_selected(model):
    """Forget earlier selections (start counting a new cycle)."""
    for layer in _topk_layers(model):
        layer.ever_selected.assign(np.zeros(layer.ever_selected.shape, dtype=np.float32))
