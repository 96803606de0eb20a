"""Old import path of :mod:`robustq_deploy.fixed_point` (the requantization arithmetic moved to
the ground floor, where the kernel library and every stage reach it without importing the
quantized modules); kept so existing imports keep working."""
from ..fixed_point import *  # noqa: F401,F403
