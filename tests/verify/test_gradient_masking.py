"""A deliberately gradient-masked twin: the same forward function as the real twin, but a hard
input-quantization step (torch.round, no straight-through gradient) in front. White-box attacks
then see zero gradients; Square on the deployed module still finds adversarial examples, and the
validity checks must say so."""
import torch

from robustq_deploy.runtime import load
from robustq_deploy.train import read_checkpoint
from robustq_deploy.checkpoint import load_split
from robustq_deploy.verify import evaluate
from robustq_deploy.verify.engines import DeployedClassifier

from .conftest import verify_config


class HardInputQuant(torch.nn.Module):
    """Rounds pixels to the uint8 grid with no gradient: forward-identical to the twin on grid inputs."""

    def __init__(self, twin):
        super().__init__()
        self.twin = twin

    def forward(self, x):
        return self.twin(torch.round(x * 255) / 255)


def _evaluate(deployed, model):
    twin, run_cfg = read_checkpoint(deployed / "model.safetensors")
    x, y, _ = load_split(run_cfg, "test")
    engines = [DeployedClassifier(load(deployed / "model.qdq.onnx", threads=1), "onnxruntime")]
    # a white-box ensemble strong enough that, unmasked, Square finds nothing more
    cfg = verify_config(attacks=["pgd", "apgd-ce", "apgd-dlr", "square"], eps=0.15, steps=20, eps_sweep=[], limit=None,
                        float_model=False, amplification=False, attack_params={"square": {"queries": 150}})
    return evaluate(model(twin), engines, x[:96], y[:96], cfg, progress=False)


def test_masking_flag_fires_on_a_masked_twin(deployed):
    res = _evaluate(deployed, HardInputQuant)
    flagged = {f["name"] for f in res["flags"]}
    assert {"gradient_masking.onnxruntime", "zero_gradients", "eps1.onnxruntime"} <= flagged, flagged
    dep = res["models"]["onnxruntime"]
    assert dep["broken"]["square"] > 0.05  # Square broke what the blinded PGD could not
    assert res["checks"]["zero_gradient_fraction"] == 1.0


def test_same_setting_without_masking_has_no_flags(deployed):
    res = _evaluate(deployed, lambda twin: twin)
    assert res["flags"] == [], res["flags"]
