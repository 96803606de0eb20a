"""Accelerator descriptions: presets, user files, refusal of bad files, target names."""

import pytest

from robustq_deploy.accel import load_accel, preset_names
from robustq_deploy.accel.desc import PRESET_DIR, ArrayShape
from robustq_deploy.errors import ConfigError
from robustq_deploy.targets import get_target


def test_presets_load_with_their_stated_shapes():
    assert preset_names() == ["edge-large", "edge-small"]
    small, large = load_accel("edge-small"), load_accel("edge-large")
    assert small.mac_array == ArrayShape(8, 8) and small.xnor_array == ArrayShape(8, 128)
    assert large.mac_array == ArrayShape(16, 16) and large.mac_array.lanes == 256
    assert small.weight_buffer_bytes == 128 * 1024 and small.act_buffer_bytes == 32 * 1024
    assert small.dram_bytes_per_cycle == pytest.approx(10.0)  # 1 GB/s at 100 MHz
    assert large.clock_mhz > small.clock_mhz and large.dram_gb_per_s > small.dram_gb_per_s
    assert load_accel() == small  # the default preset


def test_presets_state_their_assumptions():
    for name in preset_names():
        text = (PRESET_DIR / f"{name}.toml").read_text()
        comments = [line for line in text.splitlines() if line.lstrip().startswith("#") or " # " in line]
        assert len(comments) >= 8, name


def test_a_copied_and_edited_file_loads(tmp_path):
    text = (PRESET_DIR / "edge-small.toml").read_text().replace("rows = 8\ncols = 8", "rows = 4\ncols = 32", 1)
    f = tmp_path / "mine.toml"
    f.write_text(text.replace('name = "edge-small"', 'name = "mine"'))
    d = load_accel(str(f))
    assert d.name == "mine" and d.mac_array == ArrayShape(4, 32)


@pytest.mark.parametrize("edit, message", [
    (("clock_mhz = 100.0", "clock_mhz = 100.0\nclok = 3"), "unknown key 'clok'"),
    (("clock_mhz = 100.0", "clock_mhz = -5.0"), "clock_mhz must be > 0"),
    (("cols = 128", "cols = 100"), "xnor_array.cols must be a multiple of 32"),
    (('act_bits = [8, "binary"]', 'act_bits = [8, "nibble"]'), "unknown format(s) nibble"),
    (("clock_mhz = 100.0", 'clock_mhz = "fast"'), "expected a number"),
    (("[xnor_array]", "[xnor_array"), "not valid TOML"),
])
def test_bad_files_are_refused_on_one_line(tmp_path, edit, message):
    f = tmp_path / "bad.toml"
    f.write_text((PRESET_DIR / "edge-small.toml").read_text().replace(*edit, 1))
    with pytest.raises(ConfigError) as exc:
        load_accel(str(f))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_preset_and_missing_file():
    with pytest.raises(ConfigError, match="unknown accelerator preset 'huge'; choose one of edge-large, edge-small"):
        load_accel("huge")
    with pytest.raises(ConfigError, match="cannot read accelerator file"):
        load_accel("/nonexistent/accel.toml")


def test_target_names_select_the_accelerator(tmp_path):
    assert get_target("fpga-sim").accel == "edge-small"
    assert get_target("fpga-sim:edge-large").accel == "edge-large"
    f = tmp_path / "mine.toml"
    assert get_target(f"fpga-sim:{f}").accel == str(f)
    d = get_target("fpga-sim")
    assert d.kind == "accel" and d.name == "fpga-sim" and d.tvm["kind"] == "llvm"
    assert get_target("x86").accel is None
