import os
import sys

# Quiet TensorFlow and keep JAX on the CPU for every test process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Tests rebuild the same small models many times; a compilation cache shared by the test
# processes turns each recompilation into a disk read.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), "sharesnet_jax_test_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# torch imports triton (its GPU kernel compiler) when present, and loading triton's LLVM into a
# process that already holds TensorFlow's crashes it. No test needs triton: make it absent.
sys.modules.setdefault("triton", None)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir of the test session; the embedded digits are written there on first use."""
    return str(tmp_path_factory.mktemp("tfds"))
