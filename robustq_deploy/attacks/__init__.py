"""Adversarial attacks sharing one threat model (:class:`ThreatModel`)."""
from .pgd import pgd
from .threat import ThreatModel

__all__ = ["ThreatModel", "pgd"]
