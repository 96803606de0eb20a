"""The ``robustq`` command line: a thin click layer over the stage functions.

Each subcommand parses its options into a typed config, calls one library function and prints
the result. Errors caused by the user (:class:`~robustq_deploy.errors.RobustqError`) are printed
as one line ``error: ...`` with exit code 2; ``check`` exits 1 when a threshold fails.
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import click

from .config import (CheckConfig, CompileConfig, ExportConfig, RunConfig, VerifyConfig, config_from_json,
                     load_config, to_dict, validate)
from .errors import ConfigError, RobustqError


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: RunConfig, sets: tuple[str, ...]) -> RunConfig:
    """Apply ``--set section.key=value`` overrides (values in TOML syntax) and re-validate."""
    if not sets:
        return cfg
    data = to_dict(cfg)
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
        node[parts[-1]] = _parse_value(value)
    return validate(config_from_json(data))


def _floats(ctx, param, value):
    if value in (None, ""):
        return ()
    try:
        return tuple(float(v) for v in str(value).split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@out_option
@click.pass_obj
def train(obj: Ctx, config_path, sets, out_dir):
    """Train a (quantized, robust) model; writes DIR/model.safetensors."""
    from .pipeline import demo_config
    from .train import train_stage

    cfg = apply_overrides(load_config(config_path) if config_path else demo_config(), sets)
    art = train_stage(cfg, out_dir, progress=obj.progress)
    click.echo(f"checkpoint {art.file}  test accuracy {art.meta['test_acc']:.4f}  ({art.meta['train_seconds']:.1f} s)")


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="qdq", show_default=True, help="Export form: qdq, integer or packed.")
@click.option("--opset", default=21, show_default=True, type=int, help="ONNX opset of the default domain.")
@out_option
def export(checkpoint, fmt, opset, out_dir):
    """Export a CHECKPOINT to ONNX; writes DIR/model.<format>.onnx."""
    from .export import export_stage

    art = export_stage(checkpoint, ExportConfig(format=fmt, opset=opset), out_dir)
    size = art.meta["size"]
    click.echo(f"onnx {art.file}  weights {size['quantized_bytes']:,} bytes (float32 {size['float_bytes']:,})")


@cli.command(name="compile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", default="x86", show_default=True, help="Target name (x86, aarch64, ...) or a target .toml file.")
@click.option("--tune", "tune_trials", default=0, show_default=True, type=int, help="MetaSchedule trials (0: no tuning).")
@out_option
def compile_cmd(model, target, tune_trials, out_dir):
    """Compile an ONNX MODEL with TVM for a target; writes DIR/model.<target>.so."""
    from .compile import compile_stage

    art = compile_stage(model, CompileConfig(target=target, tune_trials=tune_trials), out_dir)
    click.echo(f"compiled {art.file}  target {art.meta['tvm_target']}")


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--attacks", default="pgd", show_default=True, help="Comma-separated attacks.")
@click.option("--eps", default=0.1, show_default=True, type=float, help="L-inf radius (inputs in [0, 1]).")
@click.option("--eps-sweep", callback=_floats, default="", help="Extra radii for an accuracy-vs-eps sweep, e.g. 0.05,0.2.")
@click.option("--steps", default=20, show_default=True, type=int, help="PGD steps.")
@click.option("--restarts", default=1, show_default=True, type=int, help="PGD random restarts.")
@click.option("--limit", type=int, default=None, help="Attack only the first N test points.")
@click.option("--engines", default="onnxruntime,tvm", show_default=True, help="Deployed engines to score.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Folder with the dataset files.")
@click.option("--seed", default=0, show_default=True, type=int)
@out_option
@click.pass_obj
def verify(obj: Ctx, artifact, attacks, eps, eps_sweep, steps, restarts, limit, engines, data_dir, seed, out_dir):
    """Attack the deployed ARTIFACT (.onnx or compiled .so) and report robust accuracy."""
    from .config import from_dict
    from .verify import verify_stage

    cfg = from_dict(VerifyConfig, {"attacks": attacks.split(","), "eps": eps, "eps_sweep": list(eps_sweep),
                                   "steps": steps, "restarts": restarts, "limit": limit,
                                   "engines": engines.split(","), "seed": seed})
    art = verify_stage(artifact, cfg, out_dir, progress=obj.progress, data_dir=data_dir)
    click.echo((Path(out_dir) / art.meta["summary"]).read_text(), nl=False)
    click.echo(f"report {art.file}")


@cli.command()
@click.argument("report", type=click.Path(path_type=Path))
@click.option("--min-clean", type=float, default=None, help="Minimum clean accuracy of every deployed engine.")
@click.option("--min-robust", type=float, default=None, help="Minimum worst-case robust accuracy.")
@click.option("--max-drop", type=float, default=None, help="Maximum accuracy drop from twin to deployed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where check.json and check.junit.xml go (default: the report's folder).")
def check(report, min_clean, min_robust, max_drop, out_dir):
    """Apply thresholds to a verify REPORT; exit 0 if all pass, 1 if any fails, 2 on bad input."""
    from .verify import check_report

    passed, results = check_report(report, CheckConfig(min_clean, min_robust, max_drop), out_dir)
    for r in results:
        click.echo(f"{'PASS' if r['passed'] else 'FAIL'}  {r['message']}")
    if not results:
        click.echo("no thresholds given; nothing checked")
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
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Input .npy.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .npy.")
def infer(artifact, input_path, output_path):
    """Run a deployed ARTIFACT (.onnx or compiled library) on an input .npy file."""
    import numpy as np

    from .errors import InputError
    from .manifest import atomic_path
    from .runtime import load

    runner = load(artifact)
    try:
        x = np.load(input_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{input_path}: cannot read as .npy ({exc})") from None
    y = runner(x)
    with atomic_path(output_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, y)
    click.echo(f"{output_path}: {y.dtype} {list(y.shape)}")


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
