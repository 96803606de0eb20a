"""Target descriptions: shipped files, named CPUs, refusals, features LLVM enables."""
from __future__ import annotations

import pytest

from robustq_deploy.errors import ConfigError
from targets import get_target, target_names


def test_shipped_targets():
    assert {"x86", "aarch64"} <= set(target_names())
    x86, arm = get_target("x86"), get_target("aarch64")
    assert x86.runner == "native" and x86.tvm == {"kind": "llvm", "mcpu": "host"} and not x86.cross
    assert arm.runner == "qemu-aarch64" and arm.cross_compiler == "aarch64-linux-gnu-gcc"
    assert arm.tvm == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]}
    assert arm.emulator[0] == "qemu-aarch64" and arm.runtime_platform == "manylinux_2_28_aarch64"


def test_host_cpu_is_detected_and_cpus_can_be_named():
    import tvm

    assert get_target("x86").tvm_spec()["mcpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert "avx512vnni" in get_target("x86:cascadelake").cpu_features()
    assert "avx512vnni" not in get_target("x86:haswell").cpu_features()
    assert set(get_target("aarch64").cpu_features()) >= {"neon", "dotprod"}


def test_refusals(tmp_path):
    with pytest.raises(ConfigError, match="unknown target 'riscv'"):
        get_target("riscv")
    with pytest.raises(ConfigError, match="does not know the CPU"):
        get_target("x86:nocpu")
    bad = tmp_path / "t.toml"
    bad.write_text('name = "t"\nrunnr = "native"\n')
    with pytest.raises(ConfigError, match="unknown key 'runnr'"):
        get_target(str(bad))


def test_user_target_file(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\n[tvm]\nkind = "llvm"\nmcpu = "skylake"\n')
    assert get_target(str(f)).tvm_target().mcpu == "skylake"
