"""The FPGA-like integer accelerator target (``--target fpga-sim[:PRESET or FILE]``).

Users see, before they buy or synthesize anything, whether a low-bit model fits an accelerator,
how fast it would run, and that its integer arithmetic gives exactly the numbers they verified.
TVM's own accelerator stack (VTA) is gone from TVM, so this package is a small one of its own,
one module per concern:

* :mod:`.desc` the accelerator description (typed TOML; presets in ``targets/fpga/``);
* :mod:`.backend` the ``accel`` target backend (build, check, runner), registered with
  :mod:`robustq_deploy.compile.backend`;
* :mod:`.canonical` canonical Relax forms of integer layers for this target (per-op hook);
* :mod:`.patterns` the offloadable op chains as ``tvm.relax.dpl`` patterns, read into
  :class:`.layer.OffloadLayer` (:mod:`.layer`: what a layer is, whether an accelerator can run it);
* :mod:`.partition` Relax bring-your-own-codegen: ``FuseOpsByPattern`` + ``RunCodegen`` with the
  ``relax.ext.fpga_sim`` codegen; offloaded layers become ``call_dps_packed("fpga_<layer>")``;
* :mod:`.schedule` tiling of each layer onto the arrays and buffers (shared by the next two);
* :mod:`.codegen` HLS-style integer-only C per layer; :mod:`.driver` host driver and TVM glue;
* :mod:`.simlib` the simulation library (the C compiled with the host compiler);
* :mod:`.cost` cycles, traffic, memory and utilisation per layer and for the model, HTML table;
* :mod:`.stage` the compile artifacts; :mod:`.runner` loading them for ``robustq_deploy.load``.

Flow: ONNX -> import (canonical forms) -> partition -> host part lowered and built by TVM as for
x86; offloaded part -> schedule -> C -> simulation library; cost report. At run time the host
module imports the simulation library and calls each offloaded layer in it.
"""
from __future__ import annotations

from .cost import cost_table_html
from .desc import AccelDesc, ArrayShape, load_accel, preset_names


def estimate_cost(*args, **kwargs):
    """See :func:`.stage.estimate_cost` (imported lazily: it needs TVM)."""
    from .stage import estimate_cost as impl

    return impl(*args, **kwargs)


__all__ = ["AccelDesc", "ArrayShape", "cost_table_html", "estimate_cost", "load_accel", "preset_names"]
