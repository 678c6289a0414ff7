import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.sparsity import global_magnitude_masks, keep_count, magnitude_mask


def test_keep_count_rounds_half_to_even_and_keeps_one():
    # k = max(1, round_half_even(n(1 - s)))
    cases = [(10, 0.25, 8), (10, 0.35, 6), (9, 0.5, 4), (10, 0.3, 7), (10, 0.99, 1), (7, 0.0, 7)]
    for n, sparsity, k in cases:
        assert int(keep_count(n, sparsity)) == k, (n, sparsity)


def test_magnitude_mask_keeps_the_largest_and_the_earlier_of_ties():
    weights = tf.constant([[0.5, -0.1, 0.3], [-0.3, 0.2, -0.5]])
    # n = 6, s = 0.5: k = 3; |w| = .5 .1 .3 / .3 .2 .5: both .5 kept, of the tied .3 the first
    mask = magnitude_mask(weights, 0.5).numpy()
    np.testing.assert_array_equal(mask, [[1, 0, 1], [0, 0, 1]])
    # s = 0.2: k = round(4.8) = 5, only the smallest goes
    np.testing.assert_array_equal(magnitude_mask(weights, 0.2).numpy(), [[1, 0, 1], [1, 1, 1]])


def test_block_mask_prunes_whole_blocks_by_average_or_max():
    weights = tf.constant([[1.0, 1.0, 0.0, 4.0],
                           [1.0, 1.0, 0.0, 0.0],
                           [2.0, 0.0, 3.0, 3.0],
                           [0.0, 0.0, 3.0, 3.0]])
    # 2x2 blocks, AVG: [[1, 1], [0.5, 3]]; keep 2 of 4: the 3 and the first 1 (tie)
    average = magnitude_mask(weights, 0.5, block_size=(2, 2)).numpy()
    np.testing.assert_array_equal(average, [[1, 1, 0, 0], [1, 1, 0, 0],
                                            [0, 0, 1, 1], [0, 0, 1, 1]])
    # MAX: [[1, 4], [2, 3]]: keep the 4 and the 3
    largest = magnitude_mask(weights, 0.5, block_size=(2, 2), block_pooling_type="MAX").numpy()
    np.testing.assert_array_equal(largest, [[0, 0, 1, 1], [0, 0, 1, 1],
                                            [0, 0, 1, 1], [0, 0, 1, 1]])


def test_partial_edge_blocks_average_over_their_own_weights():
    weights = tf.constant([[1.0, 1.0, 0.9],
                           [1.0, 1.0, 0.0],
                           [0.0, 0.0, 0.7]])
    # 2x2 blocks from the top left: [[1, 0.45], [0, 0.7]] (edge blocks averaged over 2, 2, 1)
    mask = magnitude_mask(weights, 0.5, block_size=(2, 2)).numpy()
    np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_block_size_on_a_conv_kernel_or_bad_pooling_is_a_config_error():
    with pytest.raises(ConfigError, match="block_size"):
        magnitude_mask(tf.ones((3, 3, 2, 4)), 0.5, block_size=(2, 2))
    with pytest.raises(ConfigError, match="block_pooling_type"):
        magnitude_mask(tf.ones((4, 4)), 0.5, block_size=(2, 2), block_pooling_type="MIN")


def test_global_masks_rank_all_kernels_together():
    first = tf.constant([0.1, 0.9, 0.2])
    second = tf.constant([[0.8, -0.3], [0.05, 0.2]])
    # N = 7, s = 0.5: k = round(3.5) = 4: .9 .8 .3 and the first .2 (in `first`)
    masks = [m.numpy() for m in global_magnitude_masks([first, second], 0.5)]
    np.testing.assert_array_equal(masks[0], [0, 1, 1])
    np.testing.assert_array_equal(masks[1], [[1, 1], [0, 0]])
