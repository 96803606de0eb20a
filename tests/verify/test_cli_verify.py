"""``robustq verify`` through the CLI: options reach the config, bad ones exit 2 in one line."""
import json

import pytest

from ..helpers import run_cli


def test_verify_cli_runs_and_prints_the_summary(deployed, tmp_path, capsys):
    code, out, _ = run_cli(["-q", "verify", deployed / "model.qdq.onnx", "--attacks", "fgsm,pgd", "--eps", "0.1",
                            "--steps", "3", "--limit", "32", "--target", "onnxruntime", "--no-float", "--threads", "1",
                            "--attack-param", "pgd.restarts=2", "--out", tmp_path], capsys)
    assert code == 0, out
    assert "worst case" in out and "report " in out
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["deployed"] == ["onnxruntime"] and "float" not in r["models"]
    assert r["attacks"][1]["params"]["restarts"] == 2 and r["config"]["engines"] == ["onnxruntime"]
    assert r["validity"][0]["status"] == "skip"  # no query attack: gradient masking not checked


@pytest.mark.parametrize("args,msg", [
    (["--attacks", "pgd,deepfool"], "unknown attack 'deepfool'"),
    (["--attacks", "square", "--norm", "l2"], "supports linf threats, not l2"),
    (["--attacks", "pgd", "--attack-param", "square.queries=10"], "parameters for square, which no attack list runs"),
    (["--target", "aarch64"], "no deployed engine to verify (aarch64: no library compiled for target 'aarch64'"),
    (["--device", "localhost"], "expected HOST:PORT"),
])
def test_bad_options_exit_2(deployed, tmp_path, capsys, args, msg):
    code, _, err = run_cli(["verify", deployed / "model.x86.so", "--limit", "8", *args, "--out", tmp_path], capsys)
    assert code == 2 and msg in err and err.count("\n") == 1, err


def test_malformed_attack_param_is_a_usage_error(deployed, tmp_path, capsys):
    code, _, err = run_cli(["verify", deployed / "model.x86.so", "--attack-param", "queries=10", "--out", tmp_path], capsys)
    assert code == 2 and "expected ATTACK.KEY=VALUE" in err
