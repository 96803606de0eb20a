"""Adversarial attacks under one threat model (:class:`ThreatModel`) and one protocol
(:class:`Attack`: ``perturb(model, x, y) -> x_adv``), registered by name.

White-box: ``fgsm``, ``pgd`` (:mod:`.pgd`), ``apgd-ce``, ``apgd-dlr``, ``apgd-t`` (:mod:`.apgd`),
``cw-l2`` (:mod:`.cw`); query-based: ``square`` (scores, :mod:`.square`), ``rays`` (labels only,
:mod:`.decision`); ``transfer`` (:mod:`.transfer`).
:mod:`.ensemble` runs a list of them AutoAttack-style; :mod:`.checks` measures evaluation
pitfalls. :func:`pgd` is also the inner maximisation of adversarial training.
"""
from . import apgd, cw, decision, square, transfer  # noqa: F401  (register the attacks; pgd and fgsm via .pgd)
from .base import ACCESS, Attack, attack_class, attack_names, make_attack, register_attack
from .ensemble import EnsembleResult, order_attacks, run_ensemble
from .losses import LOSSES, get_loss
from .pgd import input_grad, pgd
from .threat import NORMS, ThreatModel

__all__ = ["ACCESS", "Attack", "attack_class", "attack_names", "make_attack", "register_attack",
           "EnsembleResult", "order_attacks", "run_ensemble", "LOSSES", "get_loss", "input_grad", "pgd",
           "NORMS", "ThreatModel"]
