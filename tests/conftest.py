import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tf_lottery.data.datasets import DEBIAN_FASHION_MNIST_DIR  # noqa: E402

HAVE_FASHION_MNIST = os.path.exists(os.path.join(DEBIAN_FASHION_MNIST_DIR,
                                                 "train-images-idx3-ubyte.gz"))
needs_fashion_mnist = pytest.mark.skipif(
    not HAVE_FASHION_MNIST,
    reason=f"real Fashion-MNIST files absent from {DEBIAN_FASHION_MNIST_DIR} "
           "(apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _seed_everything():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    keras.backend.clear_session()
