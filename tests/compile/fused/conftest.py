"""The kernel tests' targets and twins, for the fused-network tests."""
from tests.kernels.conftest import host, target  # noqa: F401  (fixtures)
