"""Certified robustness of the integer graph that ships: sound bounds on its exact semantics.

Attacks bound robustness from above; a certificate bounds it from below, and here it holds for
the deployed integer program itself (fixed-point requantization, rounding, clamps, int32
wrap-around), not for a float model of it. The graph is read in the numpy reference
interpreter's semantics (:mod:`robustq_deploy.export.reference`), so every bound is about the
numbers the engines compute bit for bit (``integer`` form) or within their stated float
deviation (``qdq`` form).

Layout:

* :mod:`.program`: the ``integer`` / ``qdq`` graph as a list of integer steps (read once);
* :mod:`.interval`: interval bounds, exact per step, in int64 (``--certify interval``);
* :mod:`.linear`: back-substituted linear bounds on the logit margins, rounding as a bounded
  error, clamps relaxed, float64 with a proven error term (``--certify linear``);
* :mod:`.milp`: a complete mixed-integer encoding for small programs (``--certify complete``);
* :mod:`.certifier`: :func:`certify`, per point certified / broken / unknown.

To support another operator: read it into a step in :mod:`.program` (or into existing steps),
then give the step an interval rule, a backward rule and (optionally) a MILP encoding; the
tests in ``tests/certify`` check each against exhaustive enumeration on small programs.
"""
from .certifier import BROKEN, CERTIFIED, METHODS, STATUS_NAMES, UNKNOWN, CertifyResult, certify
from .program import Program, read_program

__all__ = ["BROKEN", "CERTIFIED", "METHODS", "STATUS_NAMES", "UNKNOWN", "CertifyResult", "Program", "certify",
           "read_program"]
