"""Masked layers, mask rules, ticket initialisations and ghost modules."""
from tf_lottery.layers.ghosts import GhostActivation, GhostSkip, ghost_modules, ghosts_faded
from tf_lottery.layers.initializers import (DepthwiseInitializer, KaimingNormal, KaimingUniform,
                                            SignedKaimingConstant, score_initializer,
                                            weight_initializer)
from tf_lottery.layers.mask_rules import (BernoulliScores, FixedMask, MaskRule, SigmoidScores,
                                          TopKScores, get_rule, keep_count)
from tf_lottery.layers.masked import (
    MASKED_TWINS, MaskedConv1D, MaskedConv1DTranspose, MaskedConv2D, MaskedConv2DTranspose,
    MaskedConv3D, MaskedConv3DTranspose, MaskedDense, MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D, MaskedEinsumDense, MaskedEmbedding, MaskedLayerMixin,
    MaskedMultiHeadAttention, MaskedSeparableConv1D, MaskedSeparableConv2D, MaskedWeightsHost,
    MaskHost, PrunableLayer, WeightMask, dense_variables, mask_state_ids, masked_layers,
    plain_class)
from tf_lottery.ops.topk import top_k_mask  # the selection TopKScores uses, also public here

__all__ = ["GhostActivation", "GhostSkip", "ghost_modules", "ghosts_faded",
           "DepthwiseInitializer", "KaimingNormal", "KaimingUniform", "SignedKaimingConstant",
           "score_initializer", "weight_initializer", "BernoulliScores", "FixedMask", "MaskRule",
           "SigmoidScores", "TopKScores", "get_rule", "keep_count", "top_k_mask", "MASKED_TWINS",
           "MaskedConv1D", "MaskedConv1DTranspose", "MaskedConv2D", "MaskedConv2DTranspose",
           "MaskedConv3D", "MaskedConv3DTranspose", "MaskedDense", "MaskedDepthwiseConv1D",
           "MaskedDepthwiseConv2D", "MaskedEinsumDense", "MaskedEmbedding", "MaskedLayerMixin",
           "MaskedMultiHeadAttention", "MaskedSeparableConv1D", "MaskedSeparableConv2D",
           "MaskedWeightsHost", "MaskHost", "PrunableLayer", "WeightMask", "dense_variables",
           "mask_state_ids", "masked_layers", "plain_class"]
