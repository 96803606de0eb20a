"""Compile integer ONNX models with Apache TVM (Relax) into integer code for a target.

Flow (:func:`compile_stage` -> :func:`compile_onnx`)::

    CompileOptions: the target parsed once into a TargetDesc, requant, tuning, batch
    read_onnx -> prepare (once): fuse requantization chains (.requant), rewrite QDQ layers (.qdq)
              -> the target's backend (.backend: .cpu, robustq_deploy.accel.backend) builds it:
                 compile_model = import_onnx (the project's converters, .ops and .registry, next to
                 TVM's ONNX frontend, .importer; one up-front error listing every unsupported op)
                 -> lower (legalize + fuse, .build) [-> tune, .tune] -> build -> export_library

Modules: :mod:`.dtypes` (integer grids, sub-byte storage), :mod:`.registry` (converter registry),
:mod:`.importer`, :mod:`.arith` (integer arithmetic in Relax), :mod:`.ops` (one converter per
op), :mod:`.qdq`, :mod:`.requant`, :mod:`.implementations` (per-op implementations of integer
layers), :mod:`.tiled` (the tiled kernels as implementations), :mod:`.fused` (a whole graph as
one network of fused kernels), :mod:`.inspect` (where a model computes in float), :mod:`.build`,
:mod:`.tune`, :mod:`.backend` (one backend per target kind). Targets are
:mod:`robustq_deploy.targets` descriptions; kernels come from :mod:`robustq_deploy.kernels`.

Kernels: a target description lists the kernel libraries its compiles use (``kernels =
["tiled"]`` for x86 and AArch64): integer convolutions, integer matrix products and bit-packed
layers are then lowered to the project's tiled kernels (VNNI ``vpdpbusd`` / NEON ``sdot``
tiles, XNOR-popcount) through the per-op hook (:mod:`.implementations`, :mod:`.tiled`);
``compile_onnx(..., kernels=())`` keeps the generic lowering. Layers the kernels do not cover
keep the generic lowering either way. When the whole prepared graph matches the fused patterns
of :mod:`.fused.from_onnx` (the project's int8 exports), the CPU backend instead builds it as one
network of fused kernels in NHWC / packed storage (no per-op layout transforms or separate
requantization loops), with the register tiles of the target's tile records;
``meta["compile_path"]`` records which path ran (``"fused-network"`` or ``"per-op"``, with
``fused_refused`` saying why).

Requantization of fused QDQ layers (``requant``): ``"fixed-point"`` (the project's semantics),
``"float"`` (onnxruntime's QLinearConv rescale, what onnxruntime runs for a QDQ graph), or
``"auto"``: fixed-point for models this project exported (``producer_name`` robustq-deploy),
float for everything else, so each model matches the runtime it was made for. The resolved
choice is recorded in the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from ..config import REQUANT_CHOICES, CompileConfig, to_dict
from ..errors import ArtifactError, ConfigError
from ..manifest import Artifact, ensure_writable, publishing, read_verified, resolve_input
from ..targets import TargetDesc, get_target
from .importer import import_onnx

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


@dataclass(frozen=True)
class CompileOptions:
    """Everything a compile is told, parsed once: the target description and the settings of
    ``[compile]``. Made by :meth:`from_config` (what the pipeline and the CLI do) or :meth:`of`."""

    target: TargetDesc
    requant: str = "auto"  # QDQ layers: "fixed-point", "float", "auto" (by producer)
    tune_trials: int = 0
    batch: int | None = None  # static batch size (None: one build for every batch size)
    kernels: tuple[str, ...] | None = None  # kernel libraries to use; None: the target's own
    source: str = "model"  # how errors name the model
    target_name: str = ""  # the target as it was named ("x86:znver4"); the manifest records it

    @property
    def libraries(self) -> tuple[str, ...]:
        return self.target.kernels if self.kernels is None else tuple(self.kernels)

    @classmethod
    def of(cls, target: "str | TargetDesc", **settings: Any) -> "CompileOptions":
        """Options for ``target`` (a target name or a description) with ``settings``; checked."""
        desc = get_target(target) if isinstance(target, str) else target
        settings.setdefault("target_name", target if isinstance(target, str) else desc.name)
        return cls(desc, **settings).checked()

    @classmethod
    def from_config(cls, cfg: CompileConfig) -> "CompileOptions":
        """The options of a ``[compile]`` section (the target parsed here, once); checked."""
        try:
            desc = get_target(cfg.target)
        except ConfigError as exc:
            raise ConfigError(f"compile.target: {exc}") from None
        return cls(desc, cfg.requant, cfg.tune_trials, cfg.batch, target_name=cfg.target).checked()

    def checked(self) -> "CompileOptions":
        """These options, after the ranges and the target's backend refused what cannot work."""
        from .backend import backend_for

        if self.requant not in REQUANT_CHOICES:
            raise ConfigError(f"compile.requant: unknown value {self.requant!r}; "
                              f"choose one of {', '.join(REQUANT_CHOICES)}")
        if self.tune_trials < 0:
            raise ConfigError(f"compile.tune_trials: must be >= 0, got {self.tune_trials}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"compile.batch: must be >= 1, got {self.batch}")
        if self.tune_trials and self.batch is None:
            raise ConfigError("compile.tune_trials: tuning needs static shapes; set compile.batch (--batch N), "
                              "the batch size to tune for")
        backend_for(self.target).check(self)
        return self

    @property
    def backend(self):
        from .backend import backend_for

        return backend_for(self.target)


@dataclass(frozen=True)
class Prepared:
    """A model after the graph rewrites, ready for import (made once per compile by :func:`prepare`)."""

    original: onnx.ModelProto  # as read
    graph: onnx.ModelProto  # requantization chains fused, QDQ layers rewritten
    requant: str  # the resolved requantization ("fixed-point" or "float")
    rewrites: dict[str, Any] = field(default_factory=dict)  # what the rewrites did


def prepare(model: onnx.ModelProto, requant: str = "auto") -> Prepared:
    """The graph rewrites before import, with ``requant`` resolved for ``model``."""
    from .qdq import rewrite_qdq
    from .requant import fuse_requant_chains

    mode = resolve_requant(requant, model)
    graph, chains = fuse_requant_chains(model)
    graph, report = rewrite_qdq(graph, mode)
    return Prepared(model, graph, mode, {"requant_chains": chains, "qdq": report.as_meta()})


def target_problems(model: onnx.ModelProto, desc: TargetDesc) -> list[str]:
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


def compile_model(prepared: Prepared, options: CompileOptions, database=None, partition=None):
    """A prepared model -> (imported, lowered) Relax modules for ``options.target``, and the
    compile metadata. ``options.batch`` binds symbolic dimensions (a static build, required for
    tuning); ``database`` applies tuned schedules; ``partition(mod, prepared) -> mod`` rewrites the
    imported module before lowering (an accelerator backend offloads layers there). The kernel
    libraries of ``options.libraries`` are tried by the per-op hook (none: the generic lowering)."""
    from . import ops  # noqa: F401  (registers the converters)
    from .build import lower
    from .implementations import record_implementations, record_layers, use_libraries
    from .inspect import float_compute, tir_float_sums

    desc = options.target
    extra = target_problems(prepared.original, desc)
    with record_implementations() as used, record_layers() as layers, use_libraries(*options.libraries):
        mod = import_onnx(prepared.graph, options.source, desc, extra)
    if options.batch is not None:
        mod = bind_batch(mod, options.batch)
    layout = None
    if options.libraries:
        from .layout import sink_transposes, transposes_left

        mod = sink_transposes(mod)
        layout = {"between_kernels": "NHWC", "transposes": transposes_left(mod)}
    if partition is not None:
        mod = partition(mod, prepared)
    lowered = lower(mod, desc, database)
    if options.libraries:
        from .tiled import finish_lowering

        lowered = finish_lowering(lowered, used)
    floats = float_compute(lowered)
    meta = {"requant": prepared.requant, "rewrites": prepared.rewrites, "implementations": dict(sorted(used.items())),
            "layers": layers,
            "float_compute": floats, "float_reductions": tir_float_sums(lowered), "integer_only": not floats}
    if layout is not None:
        meta["layout"] = layout
    return mod, lowered, meta


def target_meta(desc: TargetDesc) -> dict[str, Any]:
    """What every compiled artifact records of its target (``target_desc``: the whole
    description, which :func:`robustq_deploy.load` reads back to pick the backend)."""
    return {"target": desc.name, "kind": desc.kind, "tvm_target": desc.tvm_spec(), "cpu_features": desc.cpu_features(),
            "target_desc": {**desc.as_meta(), "tvm": desc.tvm_spec()}}


def compile_onnx(model: onnx.ModelProto, target: "str | TargetDesc | CompileOptions", lib_path: str | Path,
                 **settings: Any) -> dict[str, Any]:
    """Build ``model`` for ``target`` and write the library atomically; returns the compile
    metadata. ``target`` is a :class:`CompileOptions`, or a target name / description with the
    options as keywords (``requant``, ``tune_trials``, ``batch``, ``kernels``: the kernel
    libraries to use, ``()`` for TVM's generic lowering, ``source``)."""
    options = target if isinstance(target, CompileOptions) else CompileOptions.of(target, **settings)
    if isinstance(target, CompileOptions) and settings:
        options = replace(options, **settings).checked()
    prepared = prepare(model, options.requant)
    meta = options.backend.build(prepared, options, Path(lib_path))
    meta.update(target_meta(options.target))
    return meta


def compile_stage(onnx_path: str | Path, cfg: "CompileConfig | CompileOptions", out_dir: str | Path) -> Artifact:
    """Stage 3: ONNX -> ``out_dir/model.<target>.so`` recorded in the manifest."""
    from ..export import io_signature

    options = cfg if isinstance(cfg, CompileOptions) else CompileOptions.from_config(cfg)
    desc = options.target
    out = ensure_writable(out_dir, create=False)
    parent = resolve_input(onnx_path, kind="onnx", require_manifest=False)
    model = read_onnx(parent.file, parent.sha256)
    options = replace(options, source=str(parent.file))
    path = out / f"model.{desc.name}{desc.library_suffix}"
    with publishing(out) as pub:
        meta = compile_onnx(model, options, path)
        meta.update(static_signature(io_signature(model), options.batch))
        meta["quantized"] = is_quantized(model)
        parents = [parent] if parent.stage != "external" else []
        if parent.stage == "external":
            meta["source"] = {"path": str(parent.file), "sha256": parent.sha256}
        config = CompileConfig(options.target_name or desc.name, options.tune_trials, options.requant, options.batch)
        pub.record(path, "compiled", "compile", parents=parents, config=to_dict(config), meta=meta)
    return pub.artifacts[path]


__all__ = ["REQUANT_CHOICES", "CompileOptions", "Prepared", "compile_model", "compile_onnx", "compile_stage",
           "import_onnx", "prepare", "read_onnx", "resolve_requant", "target_meta"]
