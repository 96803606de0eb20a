"""``robustq train --method``: every method is selectable from the command line."""
from robustq_deploy.train import checkpoint_metrics

from ..helpers import run_cli

SMALL = ["--set", "train.epochs=1", "--set", "data.train_limit=128", "--set", "data.test_limit=64",
         "--set", "train.attack.steps=2"]


def test_method_option_trains_that_method(tmp_path, capsys):
    code, out, err = run_cli(["-q", "train", "--method", "binary-relax", "--set", 'quant.weight_bits="ternary"',
                              *SMALL, "--out", tmp_path], capsys)
    assert code == 0, err
    assert "checkpoint" in out
    assert "channel_sparsity" in checkpoint_metrics(tmp_path / "model.safetensors")


def test_unknown_method_is_refused(tmp_path, capsys):
    code, out, err = run_cli(["train", "--method", "madry", "--out", tmp_path], capsys)
    assert code == 2 and "unknown method 'madry'" in err and "odgq" in err
