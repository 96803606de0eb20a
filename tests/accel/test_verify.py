"""``robustq verify --target fpga-sim``: the attacks run against the simulated accelerator module
like against any deployed module (the CLI, with progress lines on a non-terminal stderr)."""
import json

import numpy as np

from robustq_deploy.data import load_dataset
from robustq_deploy.runtime import load
from tests.helpers import run_cli


def test_verify_attacks_the_fpga_sim_module(fpga_libs, tmp_path, capsys):
    lib = fpga_libs["int8"]
    out = tmp_path / "verify"
    code, stdout, err = run_cli(["verify", lib, "--target", "fpga-sim", "--limit", 16, "--attacks", "pgd,square",
                                 "--steps", 5, "--attack-param", "square.queries=50", "--no-float", "--out", out],
                                capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["deployed"] == ["fpga-sim"] and report["engines"]["fpga-sim"]["path"] == str(lib)
    row = report["models"]["fpga-sim"]
    assert set(row["robust_acc"]) == {"pgd", "square", "worst_case"}
    assert row["robust_acc"]["worst_case"] <= row["clean_acc"]
    # the clean accuracy verify reports is the module's own on the first 16 test points
    test = load_dataset("mnist", "test")
    pred = load(lib)(test.as_float()[:16].astype(np.float32)).argmax(1)
    assert row["clean_acc"] == float(np.mean(pred == test.labels[:16]))
    assert "fpga-sim" in stdout and "report" in stdout
    # the report says where each layer ran (JSON and the HTML table)
    place = report["engines"]["fpga-sim"]["placement"]
    assert [p["layer"] for p in place["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert all(p["placement"] == "accelerator" and p["cycles"] > 0 for p in place["layers"])
    assert place["cycles_per_image"] == sum(p["cycles"] for p in place["layers"])
    html = (out / "report.html").read_text()
    assert "Where fpga-sim runs each layer" in html and "conv2" in html
