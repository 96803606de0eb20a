"""Attack objectives: margin sign, DLR invariances, registry refusal."""
import pytest
import torch

from robustq_deploy.attacks import get_loss
from robustq_deploy.attacks.losses import dlr_loss, margin_loss
from robustq_deploy.errors import ConfigError


def test_margin_positive_exactly_when_misclassified():
    z = torch.tensor([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0]])
    y = torch.tensor([0, 0])
    m = margin_loss(z, y)
    assert m.tolist() == [-2.0, 2.0]


def test_dlr_is_shift_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    assert torch.allclose(dlr_loss(z, y), dlr_loss(3.7 * z + 11.0, y), atol=1e-5)


def test_dlr_needs_three_classes_and_unknown_loss_refused():
    with pytest.raises(ConfigError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="unknown attack loss 'hinge'"):
        get_loss("hinge")
