"""CLI behaviour on bad input: one line naming the problem, exit code 2, nothing left behind."""
import numpy as np
import pytest

from .helpers import run_cli


@pytest.mark.parametrize("cmd", ["train", "export", "compile", "verify", "check", "run", "demo", "infer"])
def test_every_subcommand_has_help(cmd, capsys):
    code, out, _ = run_cli([cmd, "--help"], capsys)
    assert code == 0 and "Usage: robustq" in out and len(out.splitlines()) > 4


def _one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepoch = 3\n")
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out"], capsys)
    _one_line_error(code, err, "unknown key 'epoch'", "c.toml")
    assert not (tmp_path / "out").exists()


def test_bad_set_override(tmp_path, capsys):
    code, _, err = run_cli(["train", "--set", "train.nope=1", "--out", tmp_path / "o"], capsys)
    _one_line_error(code, err, "unknown key 'nope'")


def test_corrupt_onnx(tmp_path, capsys):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf" * 3)
    code, _, err = run_cli(["compile", bad, "--out", tmp_path / "out"], capsys)
    _one_line_error(code, err, "m.onnx", "not a valid ONNX model")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_target(tmp_path, capsys):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"")
    code, _, err = run_cli(["compile", f, "--target", "riscv", "--out", tmp_path / "out"], capsys)
    _one_line_error(code, err, "unknown target 'riscv'")


def test_missing_dataset_files(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("ROBUSTQ_DATA_DIR", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ROBUSTQ_MNIST_URL", "http://127.0.0.1:9/")  # closed port: offline
    code, _, err = run_cli(["train", "--set", 'data.dataset="mnist"', "--set", 'model.arch="mnist-cnn"',
                            "--out", tmp_path / "out"], capsys)
    _one_line_error(code, err, "train-images-idx3-ubyte.gz")
    assert not (tmp_path / "out").exists()


def test_missing_input_file(tmp_path, capsys):
    code, _, err = run_cli(["export", tmp_path / "nope.safetensors", "--out", tmp_path / "o"], capsys)
    _one_line_error(code, err, "no such file")


def test_check_bad_report(tmp_path, capsys):
    from robustq_deploy.manifest import Manifest

    r = tmp_path / "report.json"
    r.write_text("[1, 2]")
    code, _, err = run_cli(["check", r, "--min-clean", "0.5"], capsys)
    _one_line_error(code, err, "not listed in")  # check reads only reports that verify recorded
    Manifest.load(tmp_path).add(r, "report", "verify")
    code, _, err = run_cli(["check", r, "--min-clean", "0.5"], capsys)
    _one_line_error(code, err, "the report is not a JSON object")


def test_infer_non_npy(tmp_path, capsys):
    x = tmp_path / "x.npy"
    x.write_text("hello")
    m = tmp_path / "m.onnx"
    np.save(tmp_path / "unused.npy", np.zeros(1))
    m.write_bytes(b"junk")
    code, _, err = run_cli(["infer", m, "--input", x, "--output", tmp_path / "y.npy"], capsys)
    _one_line_error(code, err)


def test_help_lists_come_from_the_registries(capsys):
    """Every registered method, export format, target, dataset, attack, budget and certification
    method is named in the help of the command that takes it (the lists are read from the
    registries, not written out)."""
    from robustq_deploy.attacks import attack_names
    from robustq_deploy.certify import METHODS as CERTIFY_METHODS
    from robustq_deploy.data import dataset_names
    from robustq_deploy.export import export_formats
    from robustq_deploy.targets import target_names
    from robustq_deploy.train import method_names
    from robustq_deploy.verify.plan import BUDGETS

    def help_of(cmd: str) -> str:
        code, out, err = run_cli([cmd, "--help"], capsys)
        assert code == 0, err
        return "".join(out.split())  # click wraps long lines (at hyphens too)

    for cmd, names in (("train", method_names()), ("export", export_formats()), ("compile", target_names()),
                       ("verify", [*dataset_names(), *attack_names(), *BUDGETS.names(), *target_names(), *CERTIFY_METHODS])):
        text = help_of(cmd)
        assert all(n in text for n in names), (cmd, [n for n in names if n not in text])
