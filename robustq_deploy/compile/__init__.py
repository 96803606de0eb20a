"""Compile ONNX models with Apache TVM (Relax) into loadable shared libraries.

:func:`compile_onnx` imports, builds and exports a module for a target description from
:mod:`targets`; :func:`compile_stage` wraps it as a pipeline stage with a manifest entry.
"""
from __future__ import annotations

from pathlib import Path

import onnx

from ..config import CompileConfig, to_dict
from ..errors import ArtifactError, UnsupportedError
from ..export import io_signature
from ..manifest import Artifact, Manifest, atomic_path, resolve_input


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file; a corrupt or non-ONNX file is a one-line ArtifactError."""
    try:
        m = onnx.load(str(path))
        onnx.checker.check_model(m)
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{path}: not a valid ONNX model ({first})") from None
    if not m.graph.node:
        raise ArtifactError(f"{path}: not a valid ONNX model (empty graph)")
    return m


def import_onnx(model: onnx.ModelProto):
    """ONNX -> Relax IRModule through TVM's frontend."""
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(model, keep_params_in_input=False)
    except Exception as exc:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise UnsupportedError(f"TVM cannot import this model: {msg}") from None


def compile_onnx(model: onnx.ModelProto, target_name: str, lib_path: str | Path) -> dict:
    """Build ``model`` for ``target_name`` and write the shared library atomically."""
    import tvm
    from targets import get_target

    desc = get_target(target_name)
    mod = import_onnx(model)
    target = desc.tvm_target()
    ex = tvm.compile(mod, target=target)
    with atomic_path(lib_path) as tmp:
        lib_tmp = tmp.with_suffix(desc.library_suffix)
        ex.export_library(str(lib_tmp))
        lib_tmp.replace(tmp)
    return {"target": desc.name, "tvm_target": str(target.export()), "runner": desc.runner}


def compile_stage(onnx_path: str | Path, cfg: CompileConfig, out_dir: str | Path) -> Artifact:
    """Stage 3: ONNX -> ``out_dir/model.<target>.so`` recorded in the manifest."""
    from targets import get_target

    desc = get_target(cfg.target)
    parent = resolve_input(onnx_path, kind="onnx", require_manifest=False)
    model = read_onnx(parent.file)
    path = Path(out_dir) / f"model.{desc.name}{desc.library_suffix}"
    meta = compile_onnx(model, cfg.target, path)
    meta.update(io_signature(model))
    parents = [parent] if parent.stage != "external" else []
    if parent.stage == "external":
        meta["source"] = {"path": str(parent.file), "sha256": parent.sha256}
    return Manifest.load(out_dir).add(path, "compiled", "compile", parents=parents, config=to_dict(cfg), meta=meta)


__all__ = ["compile_onnx", "compile_stage", "import_onnx", "read_onnx"]
