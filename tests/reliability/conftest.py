import gin
import pytest


@pytest.fixture(autouse=True)
def _no_leaked_bindings():
    yield
    gin.clear_config()  # bindings of a bad start must not leak into other tests
