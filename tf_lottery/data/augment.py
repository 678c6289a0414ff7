"""Standard augmentations per dataset family, as stateless ops keyed by a per-example seed.

Every random op takes `seed`, a shape-[2] int tensor derived from (run seed, epoch, example
index), so an epoch's augmentations are a pure function of those three numbers: a resumed run
sees exactly the images an uninterrupted run would have seen.
"""
import tensorflow as tf

FAMILIES = ("none", "cifar", "pad_crop", "imagenet")


def _split(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def pad_and_crop(image, seed, padding=4):
    """Zero-pad by `padding` pixels on each side, then take a random crop of the original size."""
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, shape, seed=seed)


def cifar_train(image, seed):
    """CIFAR (He et al. 2016): 4-pixel zero pad + random 32x32 crop + random horizontal flip."""
    crop_seed, flip_seed = _split(seed, 2)
    image = pad_and_crop(image, crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def imagenet_train(image, seed, image_size=224):
    """Inception-style random resized crop (scale 0.08-1, ratio 3/4-4/3) + horizontal flip."""
    box_seed, flip_seed = _split(seed, 2)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=box_seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
    image = tf.image.resize(image, (image_size, image_size), method="bilinear")
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def imagenet_eval(image, image_size=224, resize_to=256):
    """Resize the shorter side to `resize_to` (256), then a central image_size crop (224)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_to / tf.reduce_min(shape)
    new_hw = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_hw, method="bilinear")
    top = (new_hw[0] - image_size) // 2
    left = (new_hw[1] - image_size) // 2
    return image[top:top + image_size, left:left + image_size, :]


def train_transform(family, image, seed, image_size=224):
    """The training augmentation of `family` applied to a float image in [0, 1]."""
    if family == "none":
        return image
    if family == "cifar":
        return cifar_train(image, seed)
    if family == "pad_crop":
        return pad_and_crop(image, seed)
    if family == "imagenet":
        return imagenet_train(image, seed, image_size)
    raise ValueError(f"unknown augmentation {family!r}; choose one of {FAMILIES}")


def eval_transform(family, image, image_size=224):
    """The test-time preprocessing of `family` (only ImageNet resizes and crops)."""
    if family == "imagenet":
        return imagenet_eval(image, image_size)
    return image
