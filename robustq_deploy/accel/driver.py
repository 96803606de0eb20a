"""The host side of the accelerator: a C host driver and the TVM FFI entry points.

``fpga_driver.c`` is the host driver a real system would have: per offloaded layer one function
``int fpga_run_<layer>(const in_t *in, out_t *out, int64_t batch)`` that runs the layer's kernel
on each image of a batch (on hardware: point the DMA descriptors at the buffers, start the
kernel, wait for done; in the simulation: call the kernel). It is plain C99 with a C ABI, so a C
program or ``ctypes`` can drive the simulation library directly.

``fpga_tvm.c`` adapts the driver to the calling convention of the host TVM module: for each
layer a function ``__tvm_ffi_fpga_<layer>`` with TVM FFI's C ABI (``TVMFFISafeCallType``,
``tvm/ffi/c_api.h`` of the ``apache-tvm-ffi`` wheel), which checks the two tensors
(``call_dps_packed`` passes input and output: dtype, shape, contiguity, CPU) and calls the
driver. Loading the simulation library with ``tvm.runtime.load_module`` exposes these as the
functions ``fpga_<layer>`` that the host module's ``call_dps_packed("fpga_<layer>", ...)``
resolves through its imports (:mod:`.runner`). Only this file needs TVM headers; the kernels
and the driver do not.
"""
from __future__ import annotations

import numpy as np

from ..dtypes import dtype
from .codegen import C_TYPES, GENERATOR
from .layer import OffloadLayer
from .schedule import Schedule



def _dlpack(name: str) -> tuple[str, int]:
    """DLPack type code and bits of a dtype name."""
    d = dtype(name)
    return ("kDLInt" if d.signed else "kDLUInt"), d.bits


def _sig(spec: OffloadLayer) -> tuple[str, str]:
    return C_TYPES[spec.in_dtype], C_TYPES[spec.out_dtype]


def driver_header(specs: list[OffloadLayer]) -> str:
    lines = [f"/* Host driver of the accelerator ({GENERATOR}; do not edit).",
             " * One function per offloaded layer, in graph order; each runs `batch` images, returns 0",
             " * (or -1 for a negative batch). Inputs and outputs are contiguous NCHW ([N, K] for matrix",
             " * products) in the host's memory. */", "#ifndef FPGA_DRIVER_H", "#define FPGA_DRIVER_H",
             "#include <stdint.h>", "", f"#define FPGA_NUM_LAYERS {len(specs)}", ""]
    for s in specs:
        in_t, out_t = _sig(s)
        lines.append(f"/* {s.name}: {s.describe()} */")
        lines.append(f"int fpga_run_{s.name}(const {in_t} *in, {out_t} *out, int64_t batch);")
    return "\n".join(lines + ["", "#endif", ""])


def driver_source(specs: list[OffloadLayer], schedules: list[Schedule]) -> str:
    lines = [f"/* Host driver of the accelerator ({GENERATOR}; do not edit). */", "#include <stdint.h>",
             '#include "fpga_driver.h"']
    lines += [f'#include "{s.symbol}.h"' for s in specs] + [""]
    for s, sched in zip(specs, schedules):
        in_t, out_t = _sig(s)
        up = s.name.upper()
        weights = "" if sched.resident else f", {s.symbol}_wdram"
        lines += [f"int fpga_run_{s.name}(const {in_t} *in, {out_t} *out, int64_t batch) {{", "    int64_t b;",
                  "    if (batch < 0)", "        return -1;", "    for (b = 0; b < batch; ++b)",
                  f"        {s.symbol}(in + b * FPGA_{up}_IN_SIZE, out + b * FPGA_{up}_OUT_SIZE{weights});",
                  "    return 0;", "}", ""]
    return "\n".join(lines)


GLUE_PRELUDE = """\
/* TVM FFI entry points of the accelerator simulation ({gen}; do not edit).
 * Each __tvm_ffi_<symbol> has TVM FFI's C calling convention (TVMFFISafeCallType) and receives
 * what the host module's call_dps_packed passes: the input tensor, then the output tensor. */
#include <stdint.h>
#include <tvm/ffi/c_api.h>
#include "fpga_driver.h"

static int fail(const char *layer, const char *what) {{
    const char *parts[3];
    parts[0] = layer;
    parts[1] = ": ";
    parts[2] = what;
    TVMFFIErrorSetRaisedFromCStrParts("ValueError", parts, 3);
    return -1;
}}

static DLTensor *tensor_arg(const TVMFFIAny *a) {{
    if (a->type_index == kTVMFFIDLTensorPtr)
        return (DLTensor *)a->v_ptr;
    if (a->type_index == kTVMFFITensor)
        return (DLTensor *)((char *)a->v_obj + sizeof(TVMFFIObject));
    return 0;
}}

/* a contiguous CPU tensor [batch, dims...] of the given dtype; returns its data or 0 */
static void *check_tensor(const TVMFFIAny *arg, uint8_t code, uint8_t bits, int ndim, const int64_t *dims,
                          int64_t *batch) {{
    DLTensor *t = tensor_arg(arg);
    int64_t expect = 1;
    int i;
    if (t == 0 || t->device.device_type != kDLCPU || t->dtype.code != code || t->dtype.bits != bits ||
        t->dtype.lanes != 1 || t->ndim != ndim + 1)
        return 0;
    for (i = 0; i < ndim; ++i)
        if (t->shape[i + 1] != dims[i])
            return 0;
    if (t->strides != 0)
        for (i = ndim; i >= 0; --i) {{
            if (t->shape[i] != 1 && t->strides[i] != expect)
                return 0;
            expect *= t->shape[i];
        }}
    if (*batch >= 0 && t->shape[0] != *batch)
        return 0;
    *batch = t->shape[0];
    return (char *)t->data + t->byte_offset;
}}
"""


def glue_source(specs: list[OffloadLayer]) -> str:
    out = [GLUE_PRELUDE.format(gen=GENERATOR)]
    for s in specs:
        in_t, out_t = _sig(s)
        (ic, ib), (oc, ob) = _dlpack(s.in_dtype), _dlpack(s.out_dtype)
        ind = ", ".join(map(str, s.in_shape))
        outd = ", ".join(map(str, s.out_shape))
        out += [f"int __tvm_ffi_{s.symbol}(void *self, const TVMFFIAny *args, int32_t num_args,",
                "                      TVMFFIAny *result) {",
                f"    static const int64_t in_dims[{len(s.in_shape)}] = {{{ind}}};",
                f"    static const int64_t out_dims[{len(s.out_shape)}] = {{{outd}}};",
                "    int64_t batch = -1;", "    void *x, *y;", "    (void)self;", "    (void)result;",
                "    if (num_args != 2)", f'        return fail("{s.symbol}", "expected (input, output) tensors");',
                f"    x = check_tensor(&args[0], {ic}, {ib}, {len(s.in_shape)}, in_dims, &batch);",
                f"    y = check_tensor(&args[1], {oc}, {ob}, {len(s.out_shape)}, out_dims, &batch);",
                "    if (x == 0 || y == 0)",
                f'        return fail("{s.symbol}", "input or output is not a contiguous CPU tensor of the '
                f'layer\'s dtype and shape");',
                f"    if (fpga_run_{s.name}((const {in_t} *)x, ({out_t} *)y, batch) != 0)",
                f'        return fail("{s.symbol}", "the driver refused the batch");', "    return 0;", "}", ""]
    return "\n".join(out)


def sources(specs: list[OffloadLayer], schedules: list[Schedule]) -> dict[str, str]:
    """Driver and glue file name -> text."""
    return {"fpga_driver.h": driver_header(specs), "fpga_driver.c": driver_source(specs, schedules),
            "fpga_tvm.c": glue_source(specs)}


def io_sizes(spec: OffloadLayer) -> tuple[int, int]:
    return int(np.prod(spec.in_shape)), int(np.prod(spec.out_shape))


__all__ = ["driver_header", "driver_source", "glue_source", "io_sizes", "sources"]
