"""Compile integer ONNX models with Apache TVM (Relax) into integer code for a target.

Flow (:func:`compile_model`, :func:`compile_onnx`, :func:`compile_stage`)::

    read_onnx -> prepare: fuse requantization chains (.requant), rewrite QDQ layers (.qdq)
              -> import_onnx: the project's converters (.ops, registry .registry) next to TVM's
                 ONNX frontend (.importer), one up-front error listing every unsupported op
              -> lower (legalize + fuse, .build) [-> tune, .tune] -> build -> export_library

Modules: :mod:`.dtypes` (integer grids, sub-byte storage), :mod:`.registry` (converter registry),
:mod:`.importer`, :mod:`.arith` (integer arithmetic in Relax), :mod:`.ops` (one converter per
op), :mod:`.qdq`, :mod:`.requant`, :mod:`.kernels` (pluggable kernels), :mod:`.inspect` (where a
model computes in float), :mod:`.build`, :mod:`.tune`. Targets are :mod:`targets` descriptions.

Kernels: on CPU targets (x86, AArch64) the stage lowers integer convolutions, integer matrix
products and bit-packed layers to the project's tiled kernels (``kernels/``: VNNI ``vpdpbusd`` /
NEON ``sdot`` tiles, XNOR-popcount) by default, through the kernel hook (:mod:`.kernels`,
:func:`default_kernel_libraries`); ``compile_onnx(..., kernels=False)`` keeps the generic
lowering. Layers the kernels do not cover keep the generic lowering either way. When the whole prepared graph
matches the fused patterns of :mod:`kernels.from_onnx` (the project's int8 exports), the stage
instead builds it as one network of fused kernels in NHWC / packed storage (no per-op layout
transforms or separate requantization loops); ``meta["compile_path"]`` records which path ran
(``"fused-network"`` or ``"per-op"``, with ``fused_refused`` saying why).

Requantization of fused QDQ layers (``requant``): ``"fixed-point"`` (the project's semantics),
``"float"`` (onnxruntime's QLinearConv rescale, what onnxruntime runs for a QDQ graph), or
``"auto"``: fixed-point for models this project exported (``producer_name`` robustq-deploy),
float for everything else, so each model matches the runtime it was made for. The resolved
choice is recorded in the manifest.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from ..config import CompileConfig, to_dict
from ..errors import ArtifactError, ConfigError, UnsupportedError
from ..manifest import (Artifact, commit_folder, ensure_writable, publishing, read_verified, resolve_input, sha256_file,
                        stage_folder)
from .importer import import_onnx

REQUANT_CHOICES = ("auto", "fixed-point", "float")
PROJECT_PRODUCER = "robustq-deploy"


def read_onnx(path: str | Path, sha256: str | None = None) -> onnx.ModelProto:
    """Load and check an ONNX file; a corrupt or non-ONNX file is a one-line ArtifactError. With
    ``sha256`` the model is parsed from exactly the bytes that match it (one read)."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    from ..export.robustq_ops import register_schemas

    register_schemas()  # the checker must know the ai.robustq operators of packed models
    data = read_verified(Path(path), sha256) if sha256 is not None else None
    try:
        if data is None:
            m = onnx.load(str(path))
        else:
            m = onnx.load_from_string(data)
            if any(uses_external_data(t) for t in m.graph.initializer):
                load_external_data_for_model(m, str(Path(path).parent))
        known = onnx.defs.onnx_opset_version()
        for imp in m.opset_import:
            if imp.domain in ("", "ai.onnx") and imp.version > known:
                raise ArtifactError(f"{path}: declares opset {imp.version} of the ONNX domain; onnx "
                                    f"{onnx.__version__} defines opsets up to {known}")
        onnx.checker.check_model(m)
    except ArtifactError:
        raise
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{path}: not a valid ONNX model ({first})") from None
    if not m.graph.node:
        raise ArtifactError(f"{path}: not a valid ONNX model (empty graph)")
    return m


_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
              "QLinearConv", "QLinearMatMul", "QGemm"}


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether the graph holds any quantization op (else every layer computes in float)."""
    return any(n.op_type in _QUANT_OPS or n.op_type.startswith("QLinear") or n.domain == "ai.robustq"
               for n in model.graph.node)


def resolve_requant(requant: str, model: onnx.ModelProto) -> str:
    if requant not in REQUANT_CHOICES:
        raise ConfigError(f"compile.requant: unknown value {requant!r}; choose one of {', '.join(REQUANT_CHOICES)}")
    if requant != "auto":
        return requant
    return "fixed-point" if model.producer_name == PROJECT_PRODUCER else "float"


def prepare(model: onnx.ModelProto, requant: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The graph rewrites before import; returns the new model and what they did."""
    from .qdq import rewrite_qdq
    from .requant import fuse_requant_chains

    model, chains = fuse_requant_chains(model)
    model, report = rewrite_qdq(model, requant)
    return model, {"requant_chains": chains, "qdq": report.as_meta()}


def target_problems(model: onnx.ModelProto, desc) -> list[str]:
    """Ops of ``model`` that a target restricted to ``desc.ops`` does not offer."""
    if not desc.ops:
        return []
    names = sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node})
    return [f"{op} (not offered by target {desc.name})" for op in names if op not in desc.ops]


def bind_batch(mod, batch: int):
    """``mod`` with every symbolic dimension of ``main``'s inputs bound to ``batch``."""
    from tvm import relax, tirx

    names = {str(d) for p in mod["main"].params for d in getattr(p.ty, "shape", relax.ShapeExpr([])).values
             if isinstance(d, tirx.Var)}
    return relax.transform.BindSymbolicVars({n: batch for n in sorted(names)})(mod) if names else mod


def static_signature(sig: dict[str, Any], batch: int | None) -> dict[str, Any]:
    """An io signature with its symbolic dims replaced by ``batch`` (unchanged for None)."""
    if batch is None:
        return sig
    return {k: [{**v, "shape": [batch if d is None else d for d in v["shape"]]} for v in vs] for k, vs in sig.items()}


def default_kernel_libraries(desc) -> tuple[str, ...]:
    """The kernel libraries the compile stage uses for ``desc`` unless told not to: the
    project's tiled kernels (``kernels/``, registered on first use) on the CPU targets they
    serve, none elsewhere (the fpga-sim target keeps the canonical forms its partitioner reads)."""
    from kernels import compile_hook

    return (compile_hook.enable(),) if compile_hook.serves(desc) else ()


def kernel_tir_pipeline(kernel_counts: dict[str, int]) -> str | None:
    """The TIR pipeline a build needs for the kernels a compile used (None: TVM's default)."""
    from kernels import compile_hook

    return compile_hook.tir_pipeline() if compile_hook.used(kernel_counts) else None


def compile_model(model: onnx.ModelProto, desc, requant: str = "auto", source: str = "model", database=None,
                  batch: int | None = None, partition=None, kernel_libraries: tuple[str, ...] = ()):
    """ONNX model -> (imported, lowered) Relax modules for ``desc``, and the compile metadata.
    ``batch`` binds symbolic dimensions (a static build, required for tuning). ``partition(mod,
    prepared_model) -> mod`` rewrites the imported module before lowering (the fpga-sim target
    offloads layers there, :mod:`robustq_deploy.accel`). ``kernel_libraries``: kernel libraries
    whose implementations the kernel hook may pick (:func:`default_kernel_libraries`; none:
    the generic lowering)."""
    from . import ops  # noqa: F401  (registers the converters)
    from .build import lower
    from .importer import import_onnx
    from .inspect import float_compute
    from .kernels import record_kernels, use_libraries

    mode = resolve_requant(requant, model)
    extra = target_problems(model, desc)
    prepared, rewrites = prepare(model, mode)
    with record_kernels() as kernels, use_libraries(*kernel_libraries):
        mod = import_onnx(prepared, source, desc, extra)
    if batch is not None:
        mod = bind_batch(mod, batch)
    if partition is not None:
        mod = partition(mod, prepared)
    lowered = lower(mod, desc, database)
    if kernel_libraries:
        from kernels.compile_hook import finish_lowering

        lowered = finish_lowering(lowered, kernels)
    floats = float_compute(lowered)
    meta = {"requant": mode, "rewrites": rewrites, "kernels": dict(sorted(kernels.items())), "float_compute": floats,
            "integer_only": not floats}
    return mod, lowered, meta


def compile_onnx(model: onnx.ModelProto, target_name: str, lib_path: str | Path, requant: str = "auto",
                 tune_trials: int = 0, source: str = "model", batch: int | None = None,
                 kernels: bool = True) -> dict[str, Any]:
    """Build ``model`` for ``target_name`` and write the shared library atomically
    (``kernels``: use the project's kernel library where it serves the target)."""
    from targets import get_target

    from .build import build, export_library
    from .tune import load_database, store_records, tune

    desc = get_target(target_name)
    if desc.cross_compiler and shutil.which(desc.cross_compiler) is None:  # before the long part
        from targets.toolchain import APT_HINT

        raise UnsupportedError(f"target {desc.name}: the cross compiler {desc.cross_compiler} is not installed; "
                               f"install with: {APT_HINT}")
    if desc.runner == "fpga-sim":  # host library + accelerator sources + simulation library
        from ..accel import compile_fpga

        return compile_fpga(model, desc, lib_path, requant, tune_trials, source, batch)
    meta: dict[str, Any] = {}
    libraries = default_kernel_libraries(desc) if kernels else ()
    if libraries and not tune_trials:  # the whole graph as one fused kernel network when it matches
        from kernels.from_onnx import compile_fused

        fused, refused = compile_fused(model, desc, lib_path, requant)
        if fused is not None:
            return {**fused, "kernel_libraries": list(libraries), "target": desc.name, "tvm_target": desc.tvm_spec(),
                    "cpu_features": desc.cpu_features(), "runner": desc.runner}
        meta["fused_refused"] = refused
    meta["compile_path"] = "per-op"  # kernels.from_onnx.PER_OP_PATH
    database = None
    if tune_trials:
        if batch is None:
            raise ConfigError("tuning needs static shapes: give compile.batch (--batch N), the batch size to tune for")
        _, lowered, _ = compile_model(model, desc, requant, source, batch=batch, kernel_libraries=libraries)
        records = Path(lib_path).with_suffix(".tuning")
        staged = stage_folder(records)
        try:
            with tempfile.TemporaryDirectory() as work:
                tune(lowered, desc, tune_trials, Path(work))
                names = store_records(Path(work), staged)
            database = load_database(staged)  # the build uses exactly the records stored with it
            meta["tuning"] = {"trials": tune_trials, "records": [
                {"path": f"{records.name}/{n}", "sha256": sha256_file(staged / n)} for n in names]}
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        commit_folder(staged, records)
    _, lowered, cmeta = compile_model(model, desc, requant, source, database, batch, kernel_libraries=libraries)
    pipeline = kernel_tir_pipeline(cmeta["kernels"])
    export_library(build(lowered, desc, tuned=database is not None, tir_pipeline=pipeline), lib_path, desc)
    meta.update(cmeta)
    meta["kernel_libraries"] = list(libraries)
    meta.update({"target": desc.name, "tvm_target": desc.tvm_spec(), "cpu_features": desc.cpu_features(),
                 "runner": desc.runner})
    return meta


def compile_stage(onnx_path: str | Path, cfg: CompileConfig, out_dir: str | Path) -> Artifact:
    """Stage 3: ONNX -> ``out_dir/model.<target>.so`` recorded in the manifest."""
    from targets import get_target

    from ..export import io_signature

    desc = get_target(cfg.target)
    if cfg.tune_trials < 0:
        raise ConfigError(f"compile.tune_trials: must be >= 0, got {cfg.tune_trials}")
    if cfg.batch is not None and cfg.batch < 1:
        raise ConfigError(f"compile.batch: must be >= 1, got {cfg.batch}")
    out = ensure_writable(out_dir, create=False)
    parent = resolve_input(onnx_path, kind="onnx", require_manifest=False)
    model = read_onnx(parent.file, parent.sha256)
    path = out / f"model.{desc.name}{desc.library_suffix}"
    with publishing(out) as pub:
        meta = compile_onnx(model, cfg.target, path, cfg.requant, cfg.tune_trials, str(parent.file), cfg.batch)
        meta.update(static_signature(io_signature(model), cfg.batch))
        meta["quantized"] = is_quantized(model)
        parents = [parent] if parent.stage != "external" else []
        if parent.stage == "external":
            meta["source"] = {"path": str(parent.file), "sha256": parent.sha256}
        pub.record(path, "compiled", "compile", parents=parents, config=to_dict(cfg), meta=meta)
    return pub.artifacts[path]


__all__ = ["REQUANT_CHOICES", "compile_model", "compile_onnx", "compile_stage", "default_kernel_libraries",
           "import_onnx", "kernel_tir_pipeline", "prepare", "read_onnx", "resolve_requant"]
