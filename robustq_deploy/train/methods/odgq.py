"""ODG-Q: robust quantization as online domain generalization.

What the paper says: adversarial training of a quantized network can be cast as generalizing
across "domains", each a cheap adversary; training the quantized model on several single-step
adversaries at once with a domain-generalization objective makes it about as robust as
multi-step (PGD) adversarial training, at low bit widths too, and clearly more robust than
single-step fast adversarial training, at a training cost close to natural training.

What the code does. Every training example ``i`` keeps a perturbation ``d_i`` in a replay buffer
(initialised ``U(-eps, eps)``) that grows stronger over the epochs (the accumulation of ATTA,
Zheng et al. 2020). Per step, the (process-local) batch is split at random into
``K = fresh_domains + replay_domains`` equal chunks, one per domain ``k``:

* a **fresh** domain draws its radius ``r_k ~ U(eps_min, eps_max) * eps``, step size
  ``a_k ~ U(alpha_min, alpha_max) * eps`` and takes one signed-gradient step (the model in eval
  mode) from a random start around the example's replayed perturbation,
  ``x_i + d_i + U(-noise * eps, noise * eps)`` projected to the ``r_k`` ball; all fresh chunks
  share one batched input-gradient pass; the result replaces ``d_i``;
* a **replay** domain trains on ``x_i + d_i`` (projected to the current ball) at no attack cost.

The objective is the domain-generalization objective of risk extrapolation (V-REx, Krueger et
al. 2021) over the per-domain risks ``R_k = mean_{i in k} CE(f(x_i + delta_i), y_i)``::

    loss = mean_k R_k + lambda * Var_k(R_k)          (population variance)

whose gradient up-weights the domains the model currently does worst on. After the backward
pass, the input gradient of that same pass (no extra cost) advances every example's buffered
perturbation by one projected signed step of ``replay_step * eps`` from the point it was trained
on; the sign is that of the example's own cross-entropy gradient (a domain weight
``dloss/dR_k`` can be negative). Cost per step: one input-gradient pass over the fresh chunks
(half the batch with the defaults) plus one training pass. Under DDP the buffer updates are
gathered from all processes. Measured cost and robustness: ``docs/results.md``.

Params (defaults): ``variance_weight`` lambda (1.0), ``fresh_domains`` (2), ``replay_domains``
(2), ``alpha_min`` / ``alpha_max`` (0.75 / 1.5, step sizes in units of eps), ``eps_min`` /
``eps_max`` (0.9 / 1.0, fresh radii in units of eps; above 1 the fresh domains reach beyond the
test ball), ``noise`` (1.0, random-start half-width in units of eps), ``replay_step`` (0.5, in
units of eps). The step sizes, noise and replay step were chosen on MNIST at eps 0.3 (8-bit
``mnist-small``); the pilots are recorded in ``docs/results.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..adversary import attack_mode, project, sign_steps, uniform_noise
from ..base import Method, PrepareContext, StepContext, register_method
from ..distributed import all_gather_cat


@dataclass(frozen=True)
class ODGQParams:
    variance_weight: float = 1.0
    fresh_domains: int = 2
    replay_domains: int = 2
    alpha_min: float = 0.75
    alpha_max: float = 1.5
    eps_min: float = 0.9
    eps_max: float = 1.0
    noise: float = 1.0
    replay_step: float = 0.5

    def __post_init__(self):
        problems = []
        if self.variance_weight < 0:
            problems.append("variance_weight must be >= 0")
        if self.fresh_domains < 0 or self.replay_domains < 0 or self.fresh_domains + self.replay_domains < 1:
            problems.append("fresh_domains and replay_domains must be >= 0 with at least one domain")
        if not 0 < self.alpha_min <= self.alpha_max:
            problems.append("need 0 < alpha_min <= alpha_max")
        if not 0 < self.eps_min <= 1 <= self.eps_max:
            problems.append("need 0 < eps_min <= 1 <= eps_max")
        if self.replay_step < 0 or self.noise < 0:
            problems.append("replay_step and noise must be >= 0")
        if problems:
            raise ConfigError(f"train.params: {'; '.join(problems)}")


def domain_objective(risks: torch.Tensor, variance_weight: float) -> torch.Tensor:
    """``mean(R) + lambda * Var(R)`` over the per-domain risks (population variance)."""
    return risks.mean() + variance_weight * risks.var(unbiased=False)


@register_method("odgq")
class ODGQ(Method):
    Params = ODGQParams
    requires_quant = True

    def prepare(self, model: nn.Module, ctx: PrepareContext) -> nn.Module:
        eps = self.cfg.attack.eps
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)
        noise = (torch.rand(ctx.x.shape, generator=gen) * 2 - 1) * eps
        # float16 halves the buffer (60k MNIST perturbations: 94 MB); it only seeds the next step
        self.buffer = ((ctx.x + noise).clamp(0, 1) - ctx.x).to(torch.float16)
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.copy_(state["buffer"])

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        p = self.params
        n, eps, gen = len(x), ctx.eps, ctx.generator
        k = p.fresh_domains + p.replay_domains
        chunks = torch.randperm(n, generator=gen).tensor_split(k)
        domain = torch.empty(n, dtype=torch.long)
        for d, rows in enumerate(chunks):
            domain[rows] = d
        domain = domain.to(x.device)
        fresh = domain < p.fresh_domains
        # per-domain radius and step of the fresh domains
        r = eps * (p.eps_min + (p.eps_max - p.eps_min) * torch.rand(max(p.fresh_domains, 1), generator=gen))
        a = eps * (p.alpha_min + (p.alpha_max - p.alpha_min) * torch.rand(max(p.fresh_domains, 1), generator=gen))
        view = (-1,) + (1,) * (x.ndim - 1)
        replayed = project(x + self.buffer[ctx.index].to(x), x, eps)
        x_adv = replayed.clone()
        if bool(fresh.any()):
            xf, yf = x[fresh], y[fresh]
            rf, af = r.to(x)[domain[fresh]].view(view), a.to(x)[domain[fresh]].view(view)
            start = project(replayed[fresh] + uniform_noise(xf, p.noise * eps, gen), xf, rf)
            with attack_mode(model) as net:
                x_adv[fresh] = sign_steps(net, xf, yf, start, rf, af, 1)
        self._x = x
        self._x_in = x_adv.detach().requires_grad_(True)
        per_example = F.cross_entropy(model(self._x_in), y, reduction="none")
        per_example.retain_grad()
        self._per_example = per_example
        sums = torch.zeros(k, dtype=per_example.dtype, device=x.device).index_add(0, domain, per_example)
        counts = torch.bincount(domain, minlength=k)
        risks = sums[counts > 0] / counts[counts > 0].to(sums)  # a batch smaller than K leaves domains empty
        return domain_objective(risks, p.variance_weight)

    @torch.no_grad()
    def after_backward(self, model: nn.Module, ctx: StepContext) -> None:
        """Advance each example's buffered perturbation by one signed step of its own CE gradient."""
        x, x_in = self._x, self._x_in
        direction = x_in.grad.sign() * self._per_example.grad.sign().view((-1,) + (1,) * (x.ndim - 1))
        eps = ctx.eps
        nxt = project(x_in.detach() + self.params.replay_step * eps * direction, x, eps) - x
        idx, nxt = all_gather_cat(ctx.index.to(x.device)), all_gather_cat(nxt)
        self.buffer[idx.cpu()] = nxt.cpu().to(torch.float16)
        del self._x, self._x_in, self._per_example
