"""The magnitude rule of gradual pruning as pure in-graph functions (weights -> 0/1 mask), so a
hand case can check it and every updater and distribution shares one count and one tie rule.

* count: a layer of n weights at sparsity s keeps k = max(1, round(n·(1 − s))) weights, rounded
  half to even (tfmot's and jaxpruner's `tf.math.round` / `jnp.round`), after n·(1 − s) is first
  rounded to 6 decimals so that floating-point noise cannot change k;
* which: the k largest |w|; among equal magnitudes the earlier position (C order of the kernel)
  is kept, so exactly k survive (jaxpruner's rule; tfmot keeps every weight tied with the k-th
  and may keep more than k).
"""
import tensorflow as tf

from tf_lottery.errors import ConfigError, check_choice
from tf_lottery.ops import top_k_mask

POOLING_TYPES = ("AVG", "MAX")


def keep_count(n, sparsity):
    """k = max(1, round_half_even(n·(1 − sparsity))) as an int32 tensor."""
    product = tf.cast(n, tf.float64) * (1.0 - tf.cast(sparsity, tf.float64))
    product = tf.round(product * 1e6) / 1e6
    return tf.cast(tf.maximum(tf.round(product), 1.0), tf.int32)


def check_block(block_size, block_pooling_type):
    """((height, width), pooling type) validated, ConfigError naming the argument otherwise."""
    try:
        height, width = (int(v) for v in block_size)
    except (TypeError, ValueError):
        raise ConfigError(f"block_size must be a pair of integers (height, width), "
                          f"got {block_size!r}") from None
    if height < 1 or width < 1:
        raise ConfigError(f"block_size must be >= (1, 1), got {block_size!r}")
    check_choice("block_pooling_type", block_pooling_type, POOLING_TYPES)
    return (height, width), block_pooling_type


def magnitude_mask(weights, sparsity, block_size=(1, 1), block_pooling_type="AVG"):
    """Zhu & Gupta 2017 (and tfmot's pruning_impl): m = 1 at the k = max(1, round(n(1 − s)))
    largest |w|, ties to the earlier position.

    With block_size (h, w) != (1, 1) (2-D kernels only, as in tfmot) the kernel is cut into
    h×w blocks from the top-left (partial blocks at the right and bottom edges), each block
    scored by the mean ('AVG', over its actual weights) or max ('MAX') of |w|, and whole blocks
    kept or pruned with the same count and tie rules over blocks.
    """
    (height, width), block_pooling_type = check_block(block_size, block_pooling_type)
    scores = tf.abs(tf.cast(weights, tf.float32))
    if (height, width) == (1, 1):
        return top_k_mask(scores, keep_count(tf.size(scores), sparsity))
    if scores.shape.rank != 2:
        raise ConfigError(f"block_size {block_size} needs a 2-D kernel (Dense), got shape "
                          f"{tuple(scores.shape)}")
    rows, cols = scores.shape
    pad_rows, pad_cols = -rows % height, -cols % width
    block_rows, block_cols = (rows + pad_rows) // height, (cols + pad_cols) // width

    def blocks(tensor):
        padded = tf.pad(tensor, [[0, pad_rows], [0, pad_cols]])
        return tf.reshape(padded, [block_rows, height, block_cols, width])

    if block_pooling_type == "AVG":
        counts = tf.reduce_sum(blocks(tf.ones_like(scores)), axis=[1, 3])
        pooled = tf.reduce_sum(blocks(scores), axis=[1, 3]) / counts
    else:  # |w| >= 0, so zero padding never wins a max
        pooled = tf.reduce_max(blocks(scores), axis=[1, 3])
    keep = top_k_mask(pooled, keep_count(tf.size(pooled), sparsity))
    expanded = tf.repeat(tf.repeat(keep, height, axis=0), width, axis=1)
    return expanded[:rows, :cols]


def global_magnitude_masks(weights, sparsity):
    """Global magnitude pruning: one k = max(1, round(N(1 − s))) over the N weights of all
    kernels in `weights` (a list) ranked together by |w|, ties to the earlier (kernel order,
    position); returns one mask per kernel."""
    flat = [tf.reshape(tf.abs(tf.cast(w, tf.float32)), [-1]) for w in weights]
    pooled = tf.concat(flat, axis=0)
    keep = top_k_mask(pooled, keep_count(tf.size(pooled), sparsity))
    masks, start = [], 0
    for w in weights:
        size = w.shape.num_elements()
        masks.append(tf.reshape(keep[start:start + size], tf.shape(w)))
        start += size
    return masks
