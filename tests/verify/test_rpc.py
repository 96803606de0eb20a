"""On-device verification through TVM's RPC: a server started here on loopback plays the device."""
import json

import numpy as np
import pytest
from tvm import rpc

from robustq_deploy.errors import ArtifactError, ConfigError
from robustq_deploy.manifest import resolve_input
from robustq_deploy.runtime import load
from robustq_deploy.verify import verify_stage
from robustq_deploy.verify.rpc import RPCRunner, parse_device

from .conftest import verify_config


@pytest.fixture(scope="module")
def device():
    server = rpc.Server(host="127.0.0.1", port=29100, port_end=29400, silent=True)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.terminate()


def test_remote_module_matches_the_local_one(deployed, device):
    art = resolve_input(deployed / "model.x86.so", kind="compiled")
    remote = RPCRunner(art, device)
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(remote(x), load(deployed / "model.x86.so")(x))
    assert remote.engine == f"tvm-x86@{device}"


def test_verify_on_the_device(deployed, device, tmp_path):
    cfg = verify_config(attacks=["pgd", "square"], limit=32, batch_size=32, eps_sweep=[], device=device,
                        attack_params={"square": {"queries": 30}})
    verify_stage(deployed / "model.x86.so", cfg, tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["deployed"] == ["onnxruntime", f"tvm-x86@{device}"] and report["device"] == device
    agree = report["agreement"][f"tvm-x86@{device}"]
    assert 1.0 - agree["clean"] <= agree["clean_near_ties"] / report["n"]  # only rounding near-ties may differ
    assert report["flags"] == []


def test_modified_library_is_not_uploaded(deployed, device, tmp_path):
    art = resolve_input(deployed / "model.x86.so", kind="compiled")
    art.root = tmp_path  # the same manifest entry, pointing at a changed copy
    (tmp_path / art.path).write_bytes((deployed / art.path).read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="refusing to upload a modified library"):
        RPCRunner(art, device)


@pytest.mark.parametrize("bad", ["nohost", "host:", ":9090", "host:99999", "host:abc"])
def test_bad_device_address(bad):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_device(bad)


def test_unreachable_device(deployed):
    art = resolve_input(deployed / "model.x86.so", kind="compiled")
    with pytest.raises(ConfigError, match="cannot reach a TVM RPC server"):
        RPCRunner(art, "127.0.0.1:1")
