"""The ``accel`` backend: targets whose integer layers run on the FPGA-like accelerator.

Registered as kind ``accel`` (``targets/fpga-sim.toml``); the compile stage and the runtime
reach it only through :mod:`robustq_deploy.compile.backend`. Build: :func:`.stage.build_accel`
(host library, accelerator C, simulation library, cost report). Run:
:class:`.runner.FpgaSimRunner`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..compile.backend import BACKENDS, Backend
from ..errors import ConfigError
from .stage import KIND


class AccelBackend(Backend):
    kind = KIND

    def check(self, options) -> None:
        from .desc import load_accel
        from .simlib import compiler

        desc = options.target
        if options.tune_trials:
            raise ConfigError(f"compile.tune_trials: tuning is not available for the {desc.name} target "
                              "(the offloaded layers are the accelerator's)")
        if options.libraries:
            raise ConfigError(f"target {desc.name}: kernels {list(options.libraries)}: the accelerator's layers "
                              "are its own; an accelerator target lists no kernel libraries")
        load_accel(desc.accel)  # a bad accelerator description fails before the C compiler check
        compiler()  # no C compiler: refused before the long part
        desc.features()

    def build(self, prepared, options, lib_path: Path) -> dict[str, Any]:
        from .stage import build_accel

        return build_accel(prepared, options, lib_path)

    def runner(self, artifact, desc, threads: int | None = None):
        from .runner import FpgaSimRunner

        return FpgaSimRunner(artifact, desc, threads)

    def describe(self, meta: dict[str, Any], out_dir: Path) -> list[str]:
        acc, t = meta["accel"], meta["accel"]["cost"]["totals"]
        lines = [f"{meta['target']}: {t['layers_on_accelerator']} of {t['layers_on_accelerator'] + t['layers_on_host']} "
                 f"layers on the accelerator ({acc['accelerator']['name']}), {t['cycles']:,} cycles per image; "
                 f"cost report {Path(out_dir) / acc['cost_file']}"]
        lines += [f"  on the host: {h['name']}: {'; '.join(h['reasons'])}" for h in acc["host_layers"]]
        return lines


BACKENDS.add(KIND, AccelBackend())

__all__ = ["AccelBackend"]
