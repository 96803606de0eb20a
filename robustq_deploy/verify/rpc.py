"""On-device verification: run a compiled library on a remote TVM RPC server (``--device HOST:PORT``).

The device runs TVM's stock RPC server (``python -m tvm.exec.rpc_server --host 0.0.0.0 --port
9090`` on a board, or :class:`tvm.rpc.Server` in tests). :class:`RPCRunner` reads the library's
bytes once, checks their sha256 against the manifest entry *before* uploading (the remote side
executes whatever it is sent), uploads them under a content-addressed name, loads the Relax VM
executable remotely and runs ``main`` on the remote CPU; every call ships one batch and brings
the logits back. TVM's RPC has no authentication: use it on trusted networks only.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..manifest import Artifact
from ..runtime import Runner


def parse_device(device: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); a malformed address is a one-line ConfigError."""
    host, sep, port = device.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--device {device!r}: expected HOST:PORT of a TVM RPC server, e.g. 192.168.1.20:9090")
    return host, int(port)


class RPCRunner(Runner):
    """A compiled Relax library executed on a remote TVM RPC server."""

    def __init__(self, artifact: Artifact, device: str):
        import tvm
        from tvm import relax, rpc

        host, port = parse_device(device)
        blob = artifact.file.read_bytes()
        actual = hashlib.sha256(blob).hexdigest()
        if actual != artifact.sha256:
            raise ArtifactError(f"{artifact.file}: sha256 {actual[:12]}... does not match the manifest "
                                f"({artifact.sha256[:12]}...); refusing to upload a modified library")
        try:
            self.session = rpc.connect(host, port, session_timeout=0)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"--device {device}: cannot reach a TVM RPC server ({first})") from None
        remote_name = f"robustq-{artifact.sha256[:16]}{artifact.file.suffix}"
        try:
            self.session.upload(bytearray(blob), remote_name)
            lib = self.session.load_module(remote_name)
            self.dev = self.session.cpu()
            self.vm = relax.VirtualMachine(lib, self.dev)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise ArtifactError(f"{artifact.file}: the device at {device} cannot load it ({first})") from None
        self._tensor = tvm.runtime.tensor
        self.engine = f"tvm-{artifact.meta.get('target', 'x86')}@{host}:{port}"
        super().__init__(artifact.meta["inputs"], artifact.meta["outputs"], artifact)

    def _run(self, feeds):
        from ..compile.dtypes import from_storage, to_storage

        args = [self._tensor(np.ascontiguousarray(to_storage(feeds[n])), device=self.dev) for n in self.input_names]
        res = self.vm["main"](*args)
        res = [res] if hasattr(res, "numpy") else list(res)
        return {o["name"]: from_storage(r.numpy(), o["dtype"]) for o, r in zip(self.outputs, res)}
