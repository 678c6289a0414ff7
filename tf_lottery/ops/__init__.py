"""Low-level tensor operations shared by the mask rules and the pruning criteria."""
from tf_lottery.ops.topk import order_keys, top_k_mask, top_k_threshold

__all__ = ["order_keys", "top_k_mask", "top_k_threshold"]
