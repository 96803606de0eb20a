"""HLS-style C for one offloaded layer: integer only, fixed-size buffers, array-shaped loops.

:func:`layer_sources` emits, per layer, ``fpga_<name>.h`` and ``fpga_<name>.c`` (plus
``fpga_<name>_wdram.c``, the DRAM image of streamed weights). The code follows the layer's
:class:`.schedule.Schedule` exactly, so what the cost model charges is what the loops do:

* weights: a ``static const`` on-chip ROM when resident; otherwise an AXI master port (``wdram``)
  from which each weight tile is copied into ``wbuf`` (``CH_TILE x K_PAD``);
* activations: ``abuf`` holds the zero-padded input rows of one tile (``C x IN_ROWS x WP``),
  ``obuf`` the output rows of one channel tile before pooling;
* compute: for each output pixel an im2col window ``patch[K_PAD]``, then for each group of
  ``ROWS`` channels the pipelined reduction loop (``II=1``) over ``K_PAD / COLS`` steps whose
  body is the fully unrolled ``ROWS x COLS`` array (MAC: ``acc += w * x`` on int32; XNOR:
  ``diff += popcount(xbits ^ wbits)`` on 32-bit words, ``acc = bias + K - 2 * diff``);
* epilogue per channel: fixed-point requantization with int64 products and a floor shift
  written without shifting negative values (portable C, :mod:`robustq_deploy.fixed_point`
  bit for bit), or the sign thresholds ``lo <= acc <= hi``, or the raw int32 accumulator; then
  the fused ``P x P`` max pool while storing.

HLS directives are written as ``HLS_PRAGMA(HLS PIPELINE II=1)`` (``fpga_hls.h``): an HLS tool
(``__SYNTHESIS__`` defined, as Vitis HLS does) sees ``_Pragma("HLS PIPELINE II=1")``; the host
compiler building the simulation sees nothing, so ``gcc -std=c99 -Wall -Werror`` is clean.
There is no floating-point type and no dynamic allocation anywhere. The simulation stores all
weights as int8 (XNOR: packed 32-bit words); a synthesis flow would narrow 4-bit and ternary
ROMs, which the cost model already counts at their packed size. Output is deterministic:
the same layer and schedule give the same bytes.
"""
from __future__ import annotations

import numpy as np

from .desc import WORD_BITS
from .layer import OffloadLayer
from .schedule import Schedule

GENERATOR = "robustq-deploy fpga-sim codegen"
C_TYPES = {n: f"{n}_t" for n in ("uint8", "int8", "int32", "int64", "uint32")}  # C names of the dtypes used

HLS_HEADER = """\
/* HLS directives for the accelerator sources ({gen}).
 * An HLS tool defines __SYNTHESIS__ (Vitis HLS does) and reads each HLS_PRAGMA(...) as the
 * corresponding #pragma; the host compiler that builds the bit-accurate simulation sees nothing. */
#ifndef FPGA_HLS_H
#define FPGA_HLS_H
#ifdef __SYNTHESIS__
#define HLS_PRAGMA(x) _Pragma(#x)
#else
#define HLS_PRAGMA(x)
#endif
#endif
""".format(gen=GENERATOR)


def c_array(values: np.ndarray, per_line: int = 24, indent: str = "    ") -> str:
    """A C initializer body for a flat integer array (unsigned 32-bit values with a ``u``)."""
    flat = np.asarray(values).reshape(-1)
    suffix = "u" if flat.dtype == np.uint32 else ""
    text = [str(int(v)) + suffix for v in flat.tolist()] if suffix else list(map(str, flat.tolist()))
    lines = [indent + ", ".join(text[i:i + per_line]) for i in range(0, len(text), per_line)]
    return ",\n".join(lines)


def c_rows(values: np.ndarray, per_line: int = 24) -> str:
    """A C initializer body for a 2-D array: one braced row each."""
    rows = [f"    {{\n{c_array(r, per_line, '        ')}\n    }}" for r in np.asarray(values)]
    return ",\n".join(rows)


def pack_words(wmat: np.ndarray, k_pad: int) -> np.ndarray:
    """Binary weights ``[M, K]`` (+-1) as uint32 words ``[M, k_pad / 32]``: bit ``k % 32`` of word
    ``k / 32`` is 1 for +1; bits beyond ``K`` are 0 (and so are the patch's: they never differ)."""
    m, k = wmat.shape
    bits = np.zeros((m, k_pad), np.uint64)
    bits[:, :k] = wmat > 0
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    return (bits.reshape(m, -1, WORD_BITS) << shifts).sum(axis=2).astype(np.uint32)


def weight_image(spec: OffloadLayer, sched: Schedule) -> np.ndarray:
    """The weight array as stored: int8 ``[m_pad, k_pad]`` (MAC) or uint32 words (XNOR)."""
    wmat = spec.weight_matrix()
    if sched.engine == "xnor":
        words = pack_words(wmat, sched.k_pad)
        out = np.zeros((sched.m_pad, sched.k_words), np.uint32)
        out[:spec.m] = words
        return out
    out = np.zeros((sched.m_pad, sched.k_pad), np.int8)
    out[:spec.m, :spec.k] = wmat
    return out


def _padded(v: np.ndarray | None, m_pad: int, dtype, fill: int = 0) -> np.ndarray:
    """``v`` extended to the padded channel count (padding channels are never stored)."""
    out = np.full(m_pad, fill, dtype)
    if v is not None:
        out[:len(v)] = v
    return out


def _guard(name: str) -> str:
    return f"FPGA_{name.upper()}_H"


def header(spec: OffloadLayer, sched: Schedule) -> str:
    up = spec.name.upper()
    in_t, out_t = C_TYPES[spec.in_dtype], C_TYPES[spec.out_dtype]
    in_size, out_size = int(np.prod(spec.in_shape)), int(np.prod(spec.out_shape))
    w_t = "uint32_t" if sched.engine == "xnor" else "int8_t"
    w_len = sched.m_pad * (sched.k_words if sched.engine == "xnor" else sched.k_pad)
    lines = [f"/* {spec.symbol}: {spec.describe()} ({GENERATOR}; do not edit). */",
             f"#ifndef {_guard(spec.symbol)}", f"#define {_guard(spec.symbol)}", "#include <stdint.h>", "",
             f"#define FPGA_{up}_IN_SIZE {in_size}", f"#define FPGA_{up}_OUT_SIZE {out_size}",
             f"#define FPGA_{up}_WDRAM_SIZE {0 if sched.resident else w_len}", ""]
    if sched.resident:
        lines.append(f"void {spec.symbol}(const {in_t} in[{in_size}], {out_t} out[{out_size}]);")
    else:
        lines += [f"/* streamed weights: the DRAM image (fpga_{spec.name}_wdram.c) */",
                  f"extern const {w_t} {spec.symbol}_wdram[{w_len}];",
                  f"void {spec.symbol}(const {in_t} in[{in_size}], {out_t} out[{out_size}], "
                  f"const {w_t} wdram[{w_len}]);"]
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def wdram_source(spec: OffloadLayer, sched: Schedule) -> str:
    img = weight_image(spec, sched)
    w_t = "uint32_t" if sched.engine == "xnor" else "int8_t"
    return (f"/* {spec.symbol}: weights in DRAM, {img.shape[0]} channels x {img.shape[1]} "
            f"{'words' if sched.engine == 'xnor' else 'int8'} ({GENERATOR}; do not edit). */\n"
            f"#include <stdint.h>\n#include \"{spec.symbol}.h\"\n\n"
            f"const {w_t} {spec.symbol}_wdram[{img.size}] = {{\n{c_array(img)}\n}};\n")


def _doc(spec: OffloadLayer, sched: Schedule) -> str:
    arr = "XNOR/popcount" if sched.engine == "xnor" else "MAC"
    where = "resident on chip (ROM)" if sched.resident else f"streamed from DRAM in {sched.n_wtiles} tile(s)"
    return "\n".join([
        f"/* {spec.symbol}: {spec.describe()}",
        f" * {arr} array {sched.rows}x{sched.cols}: {sched.rows} output channels in parallel, {sched.cols} "
        f"{'bits' if sched.engine == 'xnor' else 'products'} per row per cycle;",
        f" * K = {spec.k} padded to {sched.k_pad}, M = {spec.m} padded to {sched.m_pad}.",
        f" * Weights ({sched.weight_format}): {where}; channel tiles of {sched.ch_tile}.",
        f" * Activations: {sched.n_rtiles} tile(s) of {sched.rows_tile} output row(s) "
        f"({sched.in_rows_tile} padded input rows).",
        f" * Integer semantics of robustq_deploy.fixed_point; generated by {GENERATOR}, do not edit. */"])


def layer_source(spec: OffloadLayer, sched: Schedule) -> str:
    """``fpga_<name>.c``: the kernel of one layer (see the module docstring)."""
    xnor = sched.engine == "xnor"
    in_t, out_t = C_TYPES[spec.in_dtype], C_TYPES[spec.out_dtype]
    w_t = "uint32_t" if xnor else "int8_t"
    wcols = "KW32" if xnor else "K_PAD"
    in_size, out_size = int(np.prod(spec.in_shape)), int(np.prod(spec.out_shape))
    d = {"C": spec.c, "H": spec.h, "W": spec.w, "M": spec.m, "KH": spec.kh, "KW_": spec.kw, "SH": spec.stride[0],
         "SW": spec.stride[1], "PT": spec.pads[0], "PL": spec.pads[1], "WP": sched.padded_w, "K": spec.k,
         "K_PAD": sched.k_pad, "M_PAD": sched.m_pad, "ROWS": sched.rows, "COLS": sched.cols,
         "CONV_ROWS": spec.conv_rows, "CONV_COLS": spec.conv_cols, "POOL": spec.pool, "OUT_H": spec.out_h,
         "OUT_W": spec.out_w, "CH_TILE": sched.ch_tile, "N_WTILES": sched.n_wtiles, "ROWS_TILE": sched.rows_tile,
         "N_RTILES": sched.n_rtiles, "IN_ROWS": sched.in_rows_tile}
    if xnor:
        d.update(KW32=sched.k_words, COLW=sched.cols // WORD_BITS)
    src = [_doc(spec, sched), "#include <stdint.h>", '#include "fpga_hls.h"', f'#include "{spec.symbol}.h"', ""]
    src += [f"#define {k} {v}" for k, v in d.items()]
    src += ["", f"typedef {in_t} in_t;", f"typedef {out_t} out_t;", ""]
    src += _params(spec, sched)
    if sched.resident:
        img = weight_image(spec, sched)
        src += [f"/* weights: on-chip ROM, [M_PAD][{wcols}] */",
                f"static const {w_t} weights[M_PAD][{wcols}] = {{\n{c_rows(img)}\n}};",
                "#define WEIGHT(ch, k) weights[tile * CH_TILE + (ch)][k]", ""]
    else:
        src += ["/* weights: one tile in the on-chip weight buffer */",
                f"static {w_t} wbuf[CH_TILE][{wcols}];", "#define WEIGHT(ch, k) wbuf[ch][k]", ""]
    src += ["/* activations: zero-padded input rows of one tile, and output rows of one channel tile */",
            "static in_t abuf[C][IN_ROWS][WP];", "static out_t obuf[CH_TILE][ROWS_TILE][CONV_COLS];", ""]
    src += _helpers(spec, xnor)
    src += _load_input()
    if not sched.resident:
        src += _load_weights(w_t, wcols)
    src += _compute(spec, xnor)
    src += _store()
    src += _top(spec, sched, in_size, out_size, w_t, in_t, out_t)
    return "\n".join(src) + "\n"


def _params(spec: OffloadLayer, sched: Schedule) -> list[str]:
    m_pad = sched.m_pad
    out = ["/* per-channel parameters (on chip), padded to M_PAD */",
           f"static const int32_t bias[M_PAD] = {{\n{c_array(_padded(spec.bias, m_pad, np.int32))}\n}};"]
    if spec.epilogue == "requant":
        out += [f"static const int32_t mult[M_PAD] = {{\n{c_array(_padded(spec.m0, m_pad, np.int64))}\n}};",
                f"static const uint8_t shift[M_PAD] = {{\n{c_array(_padded(spec.shift, m_pad, np.int64, fill=1))}\n}};",
                f"#define QMIN {spec.qmin}", f"#define QMAX {spec.qmax}"]
    elif spec.epilogue == "sign":
        out.append(f"static const int32_t th_lo[M_PAD] = {{\n{c_array(_padded(spec.th_lo, m_pad, np.int32))}\n}};")
        if spec.th_hi is not None:
            out.append(f"static const int32_t th_hi[M_PAD] = {{\n{c_array(_padded(spec.th_hi, m_pad, np.int32))}\n}};")
    return out + [""]


def _helpers(spec: OffloadLayer, xnor: bool) -> list[str]:
    out = []
    if spec.epilogue == "requant":
        out += ["/* floor(v / 2^n) without shifting a negative value (portable C99) */",
                "static int64_t floor_shift(int64_t v, int n) {",
                "    return v >= 0 ? (v >> n) : ~((~v) >> n);", "}", "",
                "/* y = clamp((acc * m0 + 2^(n-1)) >> n, QMIN, QMAX)  (robustq_deploy.fixed_point) */",
                "static out_t epilogue(int32_t acc, int m) {",
                "    int64_t y = floor_shift((int64_t)acc * (int64_t)mult[m] + ((int64_t)1 << (shift[m] - 1)), shift[m]);",
                "    if (y < QMIN) y = QMIN;", "    if (y > QMAX) y = QMAX;", "    return (out_t)y;", "}", ""]
    elif spec.epilogue == "sign":
        hi = " && acc <= th_hi[m]" if spec.th_hi is not None else ""
        out += ["/* sign(BatchNorm(acc)) folded into integer thresholds: +1 where lo <= acc <= hi */",
                "static out_t epilogue(int32_t acc, int m) {", f"    return (acc >= th_lo[m]{hi}) ? 1 : -1;", "}", ""]
    else:
        out += ["static out_t epilogue(int32_t acc, int m) {", "    (void)m;", "    return acc;", "}", ""]
    if xnor:
        out += ["/* number of set bits of a 32-bit word (adder tree in hardware) */",
                "static int32_t popcount32(uint32_t v) {", "    v = v - ((v >> 1) & 0x55555555u);",
                "    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);", "    v = (v + (v >> 4)) & 0x0F0F0F0Fu;",
                "    return (int32_t)((v * 0x01010101u) >> 24);", "}", ""]
    return out


def _load_input() -> list[str]:
    return ["/* DMA: padded input rows [prow0, prow0 + IN_ROWS) into abuf (zeros outside the image) */",
            "static void load_input(const in_t *in, int prow0) {",
            "    int c, r, x;",
            "    for (c = 0; c < C; ++c)", "        for (r = 0; r < IN_ROWS; ++r)",
            "            for (x = 0; x < WP; ++x) {", "                int iy = prow0 + r - PT, ix = x - PL;",
            "HLS_PRAGMA(HLS PIPELINE II=1)",
            "                abuf[c][r][x] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? in[(c * H + iy) * W + ix] : 0;",
            "            }", "}", ""]


def _load_weights(w_t: str, wcols: str) -> list[str]:
    return ["/* DMA: weight tile `tile` from DRAM into wbuf (zeros past the last channel) */",
            f"static void load_weights(const {w_t} *wdram, int tile) {{", "    int ch, k;",
            "    for (ch = 0; ch < CH_TILE; ++ch)", f"        for (k = 0; k < {wcols}; ++k) {{",
            "            int m = tile * CH_TILE + ch;", "HLS_PRAGMA(HLS PIPELINE II=1)",
            f"            wbuf[ch][k] = m < M_PAD ? wdram[m * {wcols} + k] : 0;", "        }", "}", ""]


def _compute(spec: OffloadLayer, xnor: bool) -> list[str]:
    out = ["/* conv rows [r0, r0 + nrows) of channel tile `tile`: im2col window, then the array */",
           "static void compute_tile(int tile, int nrows) {", "    int oy, ox, g, r, kt, l, k;"]
    if xnor:
        out += ["    uint32_t patch[KW32];", "HLS_PRAGMA(HLS ARRAY_PARTITION variable=patch cyclic factor=COLW)"]
    else:
        out += ["    in_t patch[K_PAD];", "HLS_PRAGMA(HLS ARRAY_PARTITION variable=patch cyclic factor=COLS)"]
    out += ["    for (oy = 0; oy < nrows; ++oy)", "        for (ox = 0; ox < CONV_COLS; ++ox) {"]
    if xnor:
        out += ["            for (kt = 0; kt < KW32; ++kt) {", "                uint32_t word = 0;",
                "HLS_PRAGMA(HLS PIPELINE II=1)", "                for (l = 0; l < 32; ++l) {",
                "                    k = kt * 32 + l;", "                    if (k < K && abuf[k / (KH * KW_)][oy * SH + (k / KW_) % KH][ox * SW + k % KW_] > 0)",
                "                        word |= (uint32_t)1 << l;", "                }",
                "                patch[kt] = word;", "            }"]
    else:
        out += ["            for (k = 0; k < K_PAD; ++k) {", "HLS_PRAGMA(HLS PIPELINE II=1)",
                "                patch[k] = k < K ? abuf[k / (KH * KW_)][oy * SH + (k / KW_) % KH][ox * SW + k % KW_] : 0;",
                "            }"]
    out += ["            for (g = 0; g < CH_TILE; g += ROWS) {", "                int32_t acc[ROWS];",
            "HLS_PRAGMA(HLS ARRAY_PARTITION variable=acc complete)",
            "                for (r = 0; r < ROWS; ++r)", "                    acc[r] = 0;"]
    if xnor:
        out += ["                for (kt = 0; kt < KW32; kt += COLW) {", "HLS_PRAGMA(HLS PIPELINE II=1)",
                "                    for (r = 0; r < ROWS; ++r) {", "HLS_PRAGMA(HLS UNROLL)",
                "                        for (l = 0; l < COLW; ++l) {", "HLS_PRAGMA(HLS UNROLL)",
                "                            acc[r] += popcount32(patch[kt + l] ^ WEIGHT(g + r, kt + l));",
                "                        }", "                    }", "                }"]
    else:
        out += ["                for (kt = 0; kt < K_PAD; kt += COLS) {", "HLS_PRAGMA(HLS PIPELINE II=1)",
                "                    for (r = 0; r < ROWS; ++r) {", "HLS_PRAGMA(HLS UNROLL)",
                "                        for (l = 0; l < COLS; ++l) {", "HLS_PRAGMA(HLS UNROLL)",
                "                            acc[r] += (int32_t)WEIGHT(g + r, kt + l) * (int32_t)patch[kt + l];",
                "                        }", "                    }", "                }"]
    total = "bias[m] + K - 2 * acc[r]" if xnor else "bias[m] + acc[r]"
    out += ["                for (r = 0; r < ROWS; ++r) {", "                    int m = tile * CH_TILE + g + r;",
            "HLS_PRAGMA(HLS UNROLL)", "                    if (m < M)",
            f"                        obuf[g + r][oy][ox] = epilogue({total}, m);", "                }",
            "            }", "        }", "}", ""]
    return out


def _store() -> list[str]:
    return ["/* DMA out: max-pool POOL x POOL windows of the tile's rows into the output map */",
            "static void store_tile(out_t *out, int tile, int r0, int nrows) {", "    int ch, py, px, dy, dx;",
            "    for (ch = 0; ch < CH_TILE; ++ch) {", "        int m = tile * CH_TILE + ch;",
            "        if (m >= M)", "            break;", "        for (py = 0; py < nrows / POOL; ++py)",
            "            for (px = 0; px < OUT_W; ++px) {", "                out_t v = obuf[ch][py * POOL][px * POOL];",
            "HLS_PRAGMA(HLS PIPELINE II=1)", "                for (dy = 0; dy < POOL; ++dy)",
            "                    for (dx = 0; dx < POOL; ++dx)",
            "                        if (obuf[ch][py * POOL + dy][px * POOL + dx] > v)",
            "                            v = obuf[ch][py * POOL + dy][px * POOL + dx];",
            "                out[(m * OUT_H + r0 / POOL + py) * OUT_W + px] = v;", "            }", "    }", "}", ""]


def _top(spec: OffloadLayer, sched: Schedule, in_size: int, out_size: int, w_t: str, in_t: str, out_t: str) -> list[str]:
    args = f"const in_t in[{in_size}], out_t out[{out_size}]"
    w_len = sched.m_pad * (sched.k_words if sched.engine == "xnor" else sched.k_pad)
    if not sched.resident:
        args += f", const {w_t} wdram[{w_len}]"
    out = ["/* the accelerator kernel: one image */", f"void {spec.symbol}({args}) {{", "    int tile, rt;",
           f"HLS_PRAGMA(HLS INTERFACE mode=m_axi port=in offset=slave bundle=gmem0 depth={in_size})",
           f"HLS_PRAGMA(HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth={out_size})"]
    if not sched.resident:
        out.append(f"HLS_PRAGMA(HLS INTERFACE mode=m_axi port=wdram offset=slave bundle=gmem2 depth={w_len})")
        out.append("HLS_PRAGMA(HLS ARRAY_PARTITION variable=wbuf cyclic factor=ROWS dim=1)")
    else:
        out.append("HLS_PRAGMA(HLS BIND_STORAGE variable=weights type=rom_2p impl=bram)")
        out.append("HLS_PRAGMA(HLS ARRAY_PARTITION variable=weights cyclic factor=ROWS dim=1)")
    out += ["HLS_PRAGMA(HLS INTERFACE mode=s_axilite port=return)"]
    if sched.n_rtiles == 1:
        out.append("    load_input(in, 0);  /* the whole input map fits: read it once */")
    out += ["    for (tile = 0; tile < N_WTILES; ++tile) {"]
    if not sched.resident:
        out.append("        load_weights(wdram, tile);")
    out += ["        for (rt = 0; rt < N_RTILES; ++rt) {", "            int r0 = rt * ROWS_TILE;",
            "            int nrows = CONV_ROWS - r0 < ROWS_TILE ? CONV_ROWS - r0 : ROWS_TILE;"]
    if sched.n_rtiles > 1:
        out.append("            load_input(in, r0 * SH);")
    out += ["            compute_tile(tile, nrows);", "            store_tile(out, tile, r0, nrows);", "        }", "    }",
            "}"]
    return out


def layer_sources(spec: OffloadLayer, sched: Schedule) -> dict[str, str]:
    """File name -> text of one layer's sources."""
    files = {f"{spec.symbol}.h": header(spec, sched), f"{spec.symbol}.c": layer_source(spec, sched)}
    if not sched.resident:
        files[f"{spec.symbol}_wdram.c"] = wdram_source(spec, sched)
    return files


__all__ = ["C_TYPES", "GENERATOR", "HLS_HEADER", "c_array", "c_rows", "header", "layer_source", "layer_sources", "pack_words",
           "weight_image"]
