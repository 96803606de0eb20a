"""Training methods, one module each, registered by name when imported here.

standard (natural, qat, pgd-at), trades, fgsm_rs (fgsm-rs), dq, odgq, lwq, binary_relax
(binary-relax), ibp (certified training by interval bound propagation). To add a method: a new
module with a ``@register_method("name")`` class (see :mod:`robustq_deploy.train.base`), imported
below; its docstring states the paper, the equations and every hyperparameter default.
"""
from . import binary_relax, dq, fgsm_rs, ibp, lwq, odgq, standard, trades  # noqa: F401
