"""Pruning criteria: model (and maybe a batch) -> masks {layer name: 0/1 float32 array}.

Every criterion only removes weights that the layer's current mask still keeps, and reports
masks for the layers it prunes (prunable_layers(model, exclude)); see `selection` for the
counting, rounding and tie rules they share.
"""
from tf_lottery.pruning.gradients import sparse_categorical_loss
from tf_lottery.pruning.grasp import grasp_masks, grasp_scores, hessian_gradient_product
from tf_lottery.pruning.magnitude import frankle_carbin_fractions, magnitude_masks
from tf_lottery.pruning.random import random_masks, random_masks_like
from tf_lottery.pruning.registry import BATCH_CRITERIA, CRITERIA, get_criterion
from tf_lottery.pruning.selection import (SCOPES, current_masks, masks_from_scores, prune_count,
                                          remove_lowest)
from tf_lottery.pruning.snip import snip_masks, snip_scores
from tf_lottery.pruning.synflow import synflow_masks

__all__ = ["sparse_categorical_loss", "grasp_masks", "grasp_scores", "hessian_gradient_product",
           "frankle_carbin_fractions", "magnitude_masks", "random_masks", "random_masks_like",
           "BATCH_CRITERIA", "CRITERIA", "get_criterion", "SCOPES", "current_masks",
           "masks_from_scores", "prune_count", "remove_lowest", "snip_masks", "snip_scores",
           "synflow_masks"]
