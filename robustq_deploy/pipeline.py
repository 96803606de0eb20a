"""All four stages from one config: train -> export -> compile -> verify (-> check)."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .config import RunConfig
from .validation import Validated, load_config, validated
from .manifest import Artifact, ensure_writable


@dataclass
class PipelineResult:
    checkpoint: Artifact
    onnx: Artifact
    compiled: Artifact
    report: Artifact
    check_passed: bool | None
    summary: str


def run_pipeline(cfg: RunConfig, out_dir: str | Path, progress: bool = True, log=print) -> PipelineResult:
    from .compile import compile_stage
    from .export import export_stage
    from .train import train_stage
    from .verify import SUMMARY_NAME, check_report, verify_stage

    out, checked = preflight(cfg, out_dir)
    log(f"[1/4] train {cfg.model.factory or cfg.model.arch} on {cfg.data.dataset} with {cfg.train.method} "
        f"(weights {cfg.quant.weight_bits}-bit, activations {cfg.quant.act_bits}-bit)")
    ckpt = train_stage(cfg, out, progress=progress)
    log(f"      -> {ckpt.file} (twin test accuracy {ckpt.meta['test_acc']:.4f})")
    log(f"[2/4] export {cfg.export.format} ONNX (opset {cfg.export.opset})")
    factory, kwargs = cfg.model.factory, (cfg.model.kwargs if cfg.model.factory else None)
    onnx_art = export_stage(ckpt.file, cfg.export, out, factory, kwargs)
    log(f"      -> {onnx_art.file}")
    log(f"[3/4] compile with TVM for {cfg.compile.target}")
    lib = compile_stage(onnx_art.file, checked.compile, out)  # the target as validation parsed it
    log(f"      -> {lib.file}")
    from .verify.plan import attack_list

    log(f"[4/4] verify the deployed model ({', '.join(attack_list(cfg.verify))} at {cfg.verify.norm} "
        f"eps {cfg.verify.eps:g}, budget {cfg.verify.budget})")
    report = verify_stage(lib.file, cfg.verify, out, progress=progress, data_dir=cfg.data.data_dir, model=factory,
                          model_kwargs=kwargs)
    summary = (out / SUMMARY_NAME).read_text()
    passed = None
    c = cfg.check
    if any(v is not None for v in (c.min_clean, c.min_robust, c.max_drop)):
        passed, _ = check_report(report.file, c, out)
    return PipelineResult(ckpt, onnx_art, lib, report, passed, summary)


def preflight(cfg: RunConfig, out_dir: str | Path) -> tuple[Path, Validated]:
    """Everything that can be refused before the first stage: the whole config (ranges, registries,
    target and its backend, thresholds), the output folder, and the model: its layer names against
    ``[quant.layers]`` and, for your own model, the scan of every unsupported op
    (:mod:`robustq_deploy.quant.convert`). Returns the folder and the validated config."""
    from .models import build_model_for
    from .checkpoint import load_split

    checked = validated(cfg)
    out = ensure_writable(out_dir, create=False)
    _, _, ds = load_split(cfg, "test")
    build_model_for(cfg.model, cfg.quant, len(ds.classes), ds.input_shape)
    return out, checked


def demo_config() -> RunConfig:
    with resources.as_file(resources.files("robustq_deploy") / "configs" / "digits-demo.toml") as p:
        return load_config(p)
