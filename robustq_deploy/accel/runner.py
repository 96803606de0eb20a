"""Run an fpga-sim artifact: the host TVM library with the simulation library as its accelerator.

:class:`FpgaSimRunner` is what :func:`robustq_deploy.load` returns for a compiled artifact of the
``accel`` kind (:mod:`.backend`). It checks the sha256 of every file the artifact lists (C sources, the
simulation library, the cost report) against the manifest before loading anything, loads the
host library and the simulation library with the TVM runtime (each from a private copy made while
hashing it, :func:`robustq_deploy.runtime.load_tvm_module`), imports the latter into the
former (``Module.import_module``), so the Relax VM resolves each ``call_dps_packed("fpga_<layer>")``
to the simulation's ``__tvm_ffi_fpga_<layer>``, and runs ``main`` like any TVM module.

The simulated accelerator keeps its on-chip buffers in static memory, like the single device
it models, so calls into simulation libraries are serialised by one lock.
"""
from __future__ import annotations

import threading

from ..errors import ArtifactError
from ..manifest import Artifact, inside_path, sha256_file
from ..runtime import Runner, TVMRunner, load_tvm_module, relax_vm, tvm_threads

_DEVICE = threading.Lock()


def check_files(artifact: Artifact) -> None:
    """Refuse the artifact if a listed accelerator file is missing or changed."""
    accel = artifact.meta.get("accel")
    if not accel or "files" not in accel:
        raise ArtifactError(f"{artifact.file}: an accelerator artifact without its accelerator file list")
    for f in accel["files"]:
        try:
            path = artifact.root / inside_path(f["path"], "accelerator file")
        except ValueError as exc:
            raise ArtifactError(f"{artifact.file}: {exc}") from None
        if not path.is_file():
            raise ArtifactError(f"{path}: listed by {artifact.file.name} but missing")
        actual = sha256_file(path)
        if actual != f["sha256"]:
            raise ArtifactError(f"{path}: sha256 {actual[:12]}... does not match the manifest ({f['sha256'][:12]}...); "
                                "refusing a modified artifact")


class FpgaSimRunner(TVMRunner):
    """Host TVM module + bit-accurate accelerator simulation (``TVMRunner._run`` runs it)."""

    def __init__(self, artifact: Artifact, desc, threads: int | None = None):
        import tvm

        check_files(artifact)
        accel = artifact.meta["accel"]
        listed = {f["path"]: f["sha256"] for f in accel["files"]}
        if accel["sim_library"] not in listed:
            raise ArtifactError(f"{artifact.file}: the simulation library is not in the accelerator file list")
        # both libraries are loaded from private copies made while hashing them
        host = load_tvm_module(artifact, artifact.file, artifact.sha256)
        sim = load_tvm_module(artifact, artifact.root / accel["sim_library"], listed[accel["sim_library"]])
        host.import_module(sim)
        self.vm = relax_vm(host, artifact.file)
        self._tensor = tvm.runtime.tensor
        self.threads = tvm_threads(threads)
        self.preset = accel.get("preset")
        self.engine = desc.name
        self.execution = f"simulated ({desc.name})"
        Runner.__init__(self, artifact.meta["inputs"], artifact.meta["outputs"], artifact)

    def _run(self, feeds):
        with _DEVICE:
            return super()._run(feeds)


__all__ = ["FpgaSimRunner", "check_files"]
