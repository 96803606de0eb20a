"""The ``robustq`` command line: a thin click layer over the stage functions.

Each subcommand parses its options into a typed config, calls one library function and prints
the result. Errors caused by the user (:class:`~robustq_deploy.errors.RobustqError`) are printed
as one line ``error: ...`` with exit code 2; ``check`` exits 1 when a threshold fails.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

import click

from .config import (REQUANT_CHOICES, CheckConfig, CompileConfig, ExportConfig, RunConfig, VerifyConfig,
                     config_from_json, to_dict)
from .errors import ConfigError, InputError, RobustqError
from .tomlfile import parse_value
from .validation import load_config, validate


def apply_overrides(cfg: RunConfig, sets: tuple[str, ...]) -> RunConfig:
    """Apply ``--set section.key=value`` overrides (values in TOML syntax) and re-validate."""
    if not sets:
        return cfg
    data = to_dict(cfg)
    methods = [parse_value(v) for k, eq, v in (item.partition("=") for item in sets) if k == "train.method"]
    if methods and methods[-1] != cfg.train.method:
        data["train"]["params"] = {}  # another method starts from its own default params, as --method does
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: unknown section {part!r}")
            node = node[part]
        node[parts[-1]] = parse_value(value)
    return validate(config_from_json(data))


def _floats(ctx, param, value):
    if value in (None, ""):
        return ()
    try:
        return tuple(float(v) for v in str(value).split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _method_choice(ctx, param, value):
    if value is None:
        return None
    from .train import method_names

    if value not in method_names():
        raise click.BadParameter(f"unknown method {value!r}; choose one of {', '.join(method_names())}")
    return value


class Listed(click.Option):
    """An option whose help lists the names of a registry (``{names}`` in the help text), read
    when the help is shown: the lists stay true to what is registered, and starting the CLI
    imports no stage."""

    def __init__(self, *args, names: Callable[[], Iterable[str]], **kwargs):
        self._names = names
        super().__init__(*args, **kwargs)

    def get_help_record(self, ctx):
        template = self.help
        self.help = template.replace("{names}", ", ".join(self._names()))
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = template


def _method_names():
    from .train import method_names

    return method_names()


def _export_formats():
    from .export import export_formats

    return export_formats()


def _targets():
    from .targets import target_help

    return [target_help()]


def _target_names():
    from .targets import target_names

    return target_names()


def _datasets():
    from .data import dataset_names

    return dataset_names()


def _attacks():
    from .attacks import attack_names

    return attack_names()


def _certify_methods():
    from .certify import METHODS

    return METHODS


def _budgets():
    from .verify.plan import budget_help

    return ["; ".join(budget_help())]


class Ctx:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    @property
    def progress(self) -> bool:
        return not self.quiet

    def log(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)


out_option = click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                          help="Artifact directory; outputs and manifest.json are written there.")
model_option = click.option("--model", default=None, metavar="FILE.py:FUNC",
                            help="The model factory a checkpoint of your own model was trained with "
                                 "(path/to/file.py:build or module.path:build); checked against the checkpoint.")


class RobustqGroup(click.Group):
    """Turns the OS and end-of-file errors of a command into one-line errors (exit 2): click would
    report an EOFError as a user abort, and an OSError would end in a traceback."""

    def invoke(self, ctx):
        from .manifest import io_error

        try:
            return super().invoke(ctx)
        except EOFError as exc:
            raise InputError(f"unexpected end of a file ({exc or 'no data'})") from None
        except OSError as exc:
            raise io_error(exc) from None


@click.group(cls=RobustqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or stage logs.")
@click.version_option(package_name="robustq-deploy")
@click.pass_context
def cli(ctx, quiet):
    """Train robust quantized models, export integer ONNX, compile with TVM, verify the deployed model.

    \b
    Pipeline:  train -> export -> compile -> verify -> check
    Quick start:  robustq demo --out demo-out
    """
    ctx.obj = Ctx(quiet)


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Run config (TOML). Without it the built-in digits config is used.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.epochs=3 --set train.method='\"natural\"'.")
@click.option("--method", default=None, metavar="NAME", callback=_method_choice, cls=Listed, names=_method_names,
              help="Training method: {names} (another method than the config's starts from that method's "
                   "default params).")
@out_option
@click.pass_obj
def train(obj: Ctx, config_path, sets, method, out_dir):
    """Train a (quantized, robust) model; writes DIR/model.safetensors.

    Data-parallel: torchrun --nproc-per-node 2 -m robustq_deploy train ... (gloo on the CPU, NCCL on GPUs)."""
    from .config import replace
    from .pipeline import demo_config
    from .train import train_stage

    cfg = load_config(config_path) if config_path else demo_config()
    if method is not None and method != cfg.train.method:
        cfg = replace(cfg, **{"train.method": method, "train.params": {}})
    cfg = apply_overrides(cfg, sets)
    art = train_stage(cfg, out_dir, progress=obj.progress)
    click.echo(f"checkpoint {art.file}  test accuracy {art.meta['test_acc']:.4f}  ({art.meta['train_seconds']:.1f} s)")


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="qdq", show_default=True, cls=Listed, names=_export_formats,
              help="Export form: {names}.")
@click.option("--opset", default=21, show_default=True, type=int, help="ONNX opset of the default domain.")
@model_option
@out_option
def export(checkpoint, fmt, opset, model, out_dir):
    """Export a CHECKPOINT to ONNX; writes DIR/model.<format>.onnx."""
    from .export import export_stage

    art = export_stage(checkpoint, ExportConfig(format=fmt, opset=opset), out_dir, model)
    size = art.meta["size"]
    click.echo(f"onnx {art.file}  weights {size['quantized_bytes']:,} bytes (float32 {size['float_bytes']:,})")


@cli.command(name="compile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", default="x86", show_default=True, cls=Listed, names=_targets,
              help="Target: {names}; NAME:VALUE sets its variant (x86:znver4: another CPU, fpga-sim:edge-large or "
                   "fpga-sim:FILE.toml: another accelerator); or a target .toml file.")
@click.option("--tune", "tune_trials", default=0, show_default=True, type=int, help="MetaSchedule trials (0: no tuning).")
@click.option("--requant", default="auto", show_default=True, type=click.Choice(REQUANT_CHOICES),
              help="Requantization of QDQ layers: the project's fixed point, onnxruntime's float, or by producer.")
@click.option("--batch", type=int, default=None, help="Build for this batch size only (static shapes; needed by --tune).")
@out_option
def compile_cmd(model, target, tune_trials, requant, batch, out_dir):
    """Compile an ONNX MODEL with TVM into integer code for a target; writes DIR/model.<target>.so."""
    from .compile import CompileOptions, compile_stage

    options = CompileOptions.from_config(CompileConfig(target=target, tune_trials=tune_trials, requant=requant,
                                                       batch=batch))
    art = compile_stage(model, options, out_dir)
    floats = art.meta["float_compute"]
    click.echo(f"compiled {art.file}  target {art.meta['tvm_target']}  features {','.join(art.meta['cpu_features']) or '-'}")
    if not art.meta.get("quantized", True):
        click.echo("warning: this model is not quantized (no quantization op in the graph): every layer runs in "
                   "float; quantize it first (robustq train, or onnxruntime.quantization.quantize_static)", err=True)
    click.echo("integer code: every conv / matmul" if not floats else f"float compute left: {'; '.join(floats)}")
    sums = art.meta.get("float_reductions") or []
    if sums:
        click.echo(f"float reductions ({len(sums)}, e.g. average pooling): {'; '.join(sums[:3])}"
                   + (f" (+{len(sums) - 3} more)" if len(sums) > 3 else ""))
    layout = art.meta.get("layout")
    if layout and art.meta.get("compile_path") != "fused-network":
        moves = layout["transposes"]
        click.echo(f"layout: activations {layout['between_kernels']} between kernels; {len(moves)} transpose(s) left"
                   + (f": {'; '.join(moves[:3])}" if moves else ""))
    lowered = art.meta.get("layers") or {}
    if lowered and art.meta.get("compile_path") != "fused-network":
        counts = Counter(lowered.values())
        click.echo(f"layers ({len(lowered)}, per layer in the manifest's meta.layers): "
                   + ", ".join(f"{n} {what}" for what, n in counts.most_common()))
    for line in options.backend.describe(art.meta, Path(out_dir)):  # e.g. where an accelerator runs each layer
        click.echo(line)


def _attack_params(ctx, param, value) -> dict:
    """``ATTACK.KEY=VALUE`` items (values in TOML syntax) -> ``{attack: {key: value}}``."""
    out: dict = {}
    for item in value:
        key, eq, val = item.partition("=")
        attack, dot, name = key.partition(".")
        if not eq or not dot or not attack or not name:
            raise click.BadParameter(f"expected ATTACK.KEY=VALUE (e.g. square.queries=1000), got {item!r}")
        out.setdefault(attack, {})[name] = parse_value(val)
    return out


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", "data", default=None, metavar="DATASET|FILE.npz|DIR", cls=Listed, names=_datasets,
              help="Test data: a dataset ({names}), your own .npz file or image "
                   "folder; default: the data of the checkpoint in the artifact's lineage (required for a model "
                   "robustq did not train).")
@click.option("--budget", default="standard", show_default=True, cls=Listed, names=_budgets,
              help="Default attack ensemble: {names} (standard is AutoAttack's standard version).")
@click.option("--attacks", default="", cls=Listed, names=_attacks,
              help="Comma-separated attacks replacing the budget's list, run in this order on the points still "
                   "robust (query attacks last): {names}.")
@click.option("--eps", default=0.1, show_default=True, type=float, help="Threat radius (inputs in [0, 1]).")
@click.option("--norm", default="linf", show_default=True, type=click.Choice(["linf", "l2"]), help="Threat norm.")
@click.option("--eps-sweep", callback=_floats, default="", help="Radii of an accuracy-vs-eps sweep, e.g. 0.05,0.2.")
@click.option("--sweep-attacks", default="pgd", show_default=True, help="Attacks run at each sweep radius.")
@click.option("--steps", default=None, type=int, help="Steps of the gradient attacks (default: each attack's own).")
@click.option("--restarts", default=None, type=int, help="Random restarts of the gradient attacks.")
@click.option("--attack-param", "attack_params", multiple=True, callback=_attack_params, metavar="ATTACK.KEY=VALUE",
              help="An attack option, e.g. square.queries=1000 or transfer.source=surrogate (repeatable).")
@click.option("--surrogate", default=None, type=click.Path(dir_okay=False),
              help="A float ONNX model or robustq checkpoint that transfer attacks craft on (transfer.source=surrogate, "
                   "the default when given).")
@click.option("--twin", default="auto", show_default=True, type=click.Choice(["auto", "checkpoint", "onnx"]),
              help="The white-box twin: the checkpoint's PyTorch model or the ONNX graph's twin (auto: the checkpoint's "
                   "when there is one).")
@click.option("--input-range", default="auto", show_default=True, type=click.Choice(["auto", "unit", "pixels"]),
              help="A float model's input range: [0, 1] (unit) or [0, 255] (pixels); auto reads it from the graph.")
@click.option("--limit", type=int, default=None, help="Attack only the first N test points.")
@click.option("--batch-size", default=256, show_default=True, type=int, help="Points per resumable unit of work.")
@click.option("--target", "--engines", "engines", default="onnxruntime,tvm", show_default=True, cls=Listed,
              names=_target_names, help="Deployed engines: onnxruntime, tvm (this library, or every library built "
                                        "from this ONNX file), a target name ({names}) or all.")
@click.option("--device", default=None, metavar="HOST:PORT", help="Run compiled libraries on this TVM RPC server.")
@click.option("--no-float", is_flag=True, help="Do not evaluate the float model (twin weights, quantizers off).")
@click.option("--threads", type=int, default=None, help="torch / onnxruntime threads (default: theirs).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Folder with the dataset files.")
@model_option
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--certify", default=None, metavar="METHOD", cls=Listed, names=_certify_methods,
              help="Also certify every point on the deployed graph: {names} (sound bounds; complete: MILP, small "
                   "models).")
@out_option
@click.pass_obj
def verify(obj: Ctx, artifact, data, budget, attacks, eps, norm, eps_sweep, sweep_attacks, steps, restarts,
           attack_params, surrogate, twin, input_range, limit, batch_size, engines, device, no_float, threads, data_dir,
           model, seed, certify, out_dir):
    """Attack the deployed ARTIFACT and report robust accuracy.

    ARTIFACT: an ONNX file (from robustq or any other tool), a compiled library recorded by robustq,
    or an artifact folder. White-box attacks differentiate a twin (the checkpoint's, or the ONNX
    graph's own) and are replayed on every deployed engine; query attacks run on the engines.
    Writes report.json, summary.txt, report.html and report.junit.xml into --out; an interrupted
    run resumes from the state saved there."""
    from .config import from_dict
    from .verify import verify_stage

    from .data import dataset_names

    own = data is not None and (data not in dataset_names() or Path(data).exists())
    cfg = from_dict(VerifyConfig, {"budget": budget, "attacks": _names(attacks), "eps": eps, "norm": norm,
                                   "eps_sweep": list(eps_sweep), "sweep_attacks": _names(sweep_attacks),
                                   "steps": steps, "restarts": restarts, "attack_params": attack_params,
                                   "limit": limit, "batch_size": batch_size, "engines": _names(engines),
                                   "device": device, "float_model": not no_float, "threads": threads, "seed": seed,
                                   "dataset": None if own else data, "surrogate": surrogate, "twin": twin,
                                   "input_range": input_range, "certify": certify})
    art = verify_stage(artifact, cfg, out_dir, progress=obj.progress, data_dir=data_dir,
                       data_path=data if own else None, model=model)
    click.echo((Path(out_dir) / art.meta["summary"]).read_text(), nl=False)
    click.echo(f"report {art.file} (also {art.meta['html']}, {art.meta['junit']})")


@cli.command()
@click.argument("report", type=click.Path(path_type=Path))
@click.option("--min-clean", type=float, default=None, help="Minimum clean accuracy of every deployed engine.")
@click.option("--min-robust", type=float, default=None, help="Minimum worst-case robust accuracy.")
@click.option("--max-drop", type=float, default=None, help="Maximum accuracy drop from twin to deployed.")
@click.option("--min-certified", type=float, default=None, help="Minimum certified robust accuracy (verify --certify).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where check.json and check.junit.xml go (default: the report's folder).")
def check(report, min_clean, min_robust, max_drop, min_certified, out_dir):
    """Apply thresholds to a verify REPORT; any validity flag fails too.

    Exit 0 if all pass, 1 if any fails, 2 on bad input."""
    from .verify import check_report

    passed, results = check_report(report, CheckConfig(min_clean, min_robust, max_drop, min_certified), out_dir)
    for r in results:
        status = "FAIL" if not r["passed"] else ("SKIP" if r.get("skipped") else "PASS")
        click.echo(f"{status}  {r['message']}")
    if not results:
        click.echo("no thresholds given and no validity checks in the report; nothing checked")
    sys.exit(0 if passed else 1)


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config value.")
@out_option
@click.pass_obj
def run(obj: Ctx, config_path, sets, out_dir):
    """Run all stages from one CONFIG (TOML): train, export, compile, verify, check."""
    _run(obj, apply_overrides(load_config(config_path), sets), out_dir)


@cli.command()
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a value of the demo config.")
@out_option
@click.pass_obj
def demo(obj: Ctx, sets, out_dir):
    """The whole pipeline on the embedded 8x8 digits set (built-in config)."""
    from .pipeline import demo_config

    _run(obj, apply_overrides(demo_config(), sets), out_dir)


def _run(obj: Ctx, cfg: RunConfig, out_dir: Path) -> None:
    from .pipeline import run_pipeline

    res = run_pipeline(cfg, out_dir, progress=obj.progress, log=obj.log)
    click.echo(res.summary, nl=False)
    click.echo(f"artifacts in {out_dir} (manifest.json lists them)")
    if res.check_passed is not None:
        click.echo(f"check: {'PASS' if res.check_passed else 'FAIL'} (details in {out_dir / 'check.json'})")
        if not res.check_passed:
            sys.exit(1)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--input", "inputs", required=True, multiple=True, metavar="[NAME=]X.npy",
              help="Input .npy; NAME=X.npy per input for models with several inputs.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .npy (.npz for models with several outputs).")
@click.option("--target", default=None, help="Which compiled artifact of a directory to run (x86, aarch64, onnx); "
                                              "for a file, the target it must have been built for.")
def infer(artifact, inputs, output_path, target):
    """Run a deployed ARTIFACT (.onnx, compiled library, or artifact directory) on .npy inputs."""
    import numpy as np

    from .manifest import atomic_path
    from .runtime import load

    runner = load(artifact, target=target)

    def read(path: str) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"{path}: cannot read as .npy ({str(exc) or type(exc).__name__})") from None

    if len(inputs) == 1 and "=" not in inputs[0]:
        if len(runner.input_names) != 1:
            raise InputError(f"the model takes inputs {runner.input_names}; pass --input NAME=X.npy for each")
        feeds = {runner.input_names[0]: read(inputs[0])}
    else:
        pairs = [i.partition("=") for i in inputs]
        if any(not eq for _, eq, _ in pairs):
            raise InputError("with several --input options, each must be NAME=X.npy")
        feeds = {name: read(path) for name, _, path in pairs}
    outs = runner(**feeds)
    with atomic_path(output_path) as tmp:
        with open(tmp, "wb") as f:
            if len(outs) == 1:
                np.save(f, next(iter(outs.values())))
            elif output_path.suffix == ".npz":
                np.savez(f, **outs)
            else:
                raise InputError(f"the model has outputs {list(outs)}; write them to an .npz file")
    for name, y in outs.items():
        click.echo(f"{output_path}: {name} {y.dtype} {list(y.shape)}  ({runner.engine})")


def main(argv=None) -> None:
    try:
        cli.main(args=argv, prog_name="robustq", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except RobustqError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    sys.exit(0)


if __name__ == "__main__":
    main()
