"""Cost model of the accelerator, driven by its description file: cycles, latency, throughput,
on-chip memory and array utilisation per offloaded layer and for the model.

Per layer and image, with the layer's :class:`.schedule.Schedule` (array ``R x Cols``)::

    compute  = conv_rows * conv_cols * (m_pad / R) * (k_pad / Cols)        (one array step per cycle)
    traffic  = input bytes (+ halos; x weight tiles when rows are tiled too) + output bytes
               + streamed weight bytes
    dma      = ceil(traffic / (dram_gb_per_s * 1e9 / (clock_mhz * 1e6)))
    cycles   = layer_setup_cycles + passes * pipeline_depth
               + (max(compute, dma) if dma_overlap else compute + dma)
    passes   = weight tiles * row tiles (each restarts the pipelined loop nest)

``compute`` equals ``MACs / (R * Cols)`` when the channels and the reduction fill the array
exactly; padding lanes (``k_pad > K``, ``m_pad > M``) show as lower ``lane_utilisation``. The
im2col window, the requantization / threshold epilogue and the pooling are pipelined behind the
array (one window and ``R`` outputs per array step), so they add no cycles of their own.
Resident weights are loaded once (``weight_preload``), not per image. Model totals add the
offloaded layers, which run one after another on the single array; what stays on the host CPU
(TVM) is listed with the reason and not timed here.

:func:`cost_report` builds the JSON the artifact stores (``cost.json`` and the manifest);
:func:`cost_table_html` renders its per-layer table for an HTML report.
"""
from __future__ import annotations

import html
import math
from typing import Any

from ..dtypes import dtype
from .desc import AccelDesc
from .layer import OffloadLayer
from .schedule import Schedule, act_tile_bytes



def _row_tiles(spec: OffloadLayer, sched: Schedule) -> list[tuple[int, int]]:
    """``(first conv row, rows)`` of each activation tile."""
    return [(r0, min(sched.rows_tile, spec.conv_rows - r0)) for r0 in range(0, spec.conv_rows, sched.rows_tile)]


def _input_rows_read(spec: OffloadLayer, r0: int, rows: int) -> int:
    """Unpadded input rows a tile of conv rows ``[r0, r0 + rows)`` reads from DRAM."""
    first = r0 * spec.stride[0] - spec.pads[0]
    last = (r0 + rows - 1) * spec.stride[0] + spec.kh - 1 - spec.pads[0]
    return max(0, min(spec.h - 1, last) - max(0, first) + 1)


def traffic(spec: OffloadLayer, sched: Schedule) -> dict[str, int]:
    """DRAM bytes per image: input, output, streamed weights."""
    if sched.n_rtiles == 1:
        inp = spec.c * spec.h * spec.w
    else:
        rows = sum(_input_rows_read(spec, r0, n) for r0, n in _row_tiles(spec, sched))
        inp = sched.n_wtiles * spec.c * rows * spec.w
    out = spec.m * spec.out_h * spec.out_w * dtype(spec.out_dtype).storage_bytes
    weights = 0 if sched.resident else sched.weight_bytes
    return {"input": inp, "output": out, "weights": weights, "total": inp + out + weights}


def layer_cost(spec: OffloadLayer, sched: Schedule, desc: AccelDesc) -> dict[str, Any]:
    compute = spec.conv_rows * spec.conv_cols * (sched.m_pad // sched.rows) * (sched.k_pad // sched.cols)
    moved = traffic(spec, sched)
    dma = math.ceil(moved["total"] / desc.dram_bytes_per_cycle)
    passes = sched.n_wtiles * sched.n_rtiles
    overhead = desc.layer_setup_cycles + passes * desc.pipeline_depth
    body = max(compute, dma) if desc.dma_overlap else compute + dma
    cycles = overhead + body
    a_in, a_out = act_tile_bytes(spec, sched.rows_tile, sched.ch_tile)
    w_chip = sched.weight_bytes if sched.resident else sched.tile_weight_bytes()
    return {
        "name": spec.name, "placement": "accelerator", "op": spec.describe(), "pattern": spec.pattern,
        "engine": sched.engine, "weight_format": sched.weight_format, "act_format": sched.act_format,
        "array": f"{sched.rows}x{sched.cols}", "macs": spec.macs,
        "compute_cycles": compute, "dma_cycles": dma, "overhead_cycles": overhead, "cycles": cycles,
        "bound": "compute" if compute >= dma else "memory",
        "latency_us": cycles / desc.clock_mhz,
        "lane_utilisation": spec.macs / (compute * sched.lanes),
        "utilisation": spec.macs / (cycles * sched.lanes),
        "traffic_bytes": moved,
        "onchip_bytes": {"weights": w_chip, "params": sched.param_bytes, "act_in": a_in, "act_out": a_out},
        "weights_resident": sched.resident,
        "weight_bytes": sched.weight_bytes,
        "tiles": {"weight_tiles": sched.n_wtiles, "channels_per_tile": sched.ch_tile, "row_tiles": sched.n_rtiles,
                  "rows_per_tile": sched.rows_tile, "k_pad": sched.k_pad, "m_pad": sched.m_pad},
    }


def cost_report(specs: list[OffloadLayer], schedules: list[Schedule], host: list[dict[str, Any]], desc: AccelDesc,
                order: list[str]) -> dict[str, Any]:
    """Per-layer costs (accelerator and host layers, in graph ``order``) and model totals."""
    accel = {s.name: layer_cost(s, sch, desc) for s, sch in zip(specs, schedules)}
    rows = [accel[n] if n in accel else next(h for h in host if h["name"] == n) for n in order]
    cycles = sum(c["cycles"] for c in accel.values())
    resident = sum(c["weight_bytes"] for c in accel.values() if c["weights_resident"])
    streamed_tile = max((c["onchip_bytes"]["weights"] for c in accel.values() if not c["weights_resident"]), default=0)
    params = sum(c["onchip_bytes"]["params"] for c in accel.values())
    act_peak = max((c["onchip_bytes"]["act_in"] + c["onchip_bytes"]["act_out"] for c in accel.values()), default=0)
    macs = sum(c["macs"] for c in accel.values())
    totals = {
        "layers_on_accelerator": len(accel), "layers_on_host": len(rows) - len(accel),
        "cycles": cycles, "latency_us": cycles / desc.clock_mhz,
        "throughput_per_s": desc.clock_mhz * 1e6 / cycles if cycles else None,
        "macs_accelerator": macs, "macs_host": sum(h.get("macs") or 0 for h in host),
        "utilisation": (macs / sum(c["cycles"] * _lanes(c) for c in accel.values())) if accel else None,
        "weight_preload_bytes": resident,
        "weight_preload_cycles": math.ceil(resident / desc.dram_bytes_per_cycle),
        "onchip_bytes": {"weights_resident": resident, "weights_stream_tile": streamed_tile, "params": params,
                         "weight_buffer": desc.weight_buffer_bytes, "act_peak": act_peak,
                         "act_buffer": desc.act_buffer_bytes},
        "traffic_bytes_per_image": sum(c["traffic_bytes"]["total"] for c in accel.values()),
    }
    return {"accelerator": desc.as_dict(), "layers": rows, "totals": totals,
            "notes": "cycles per image at batch 1, layers one after another on one array; host layers not timed"}


def _lanes(c: dict[str, Any]) -> int:
    r, k = c["array"].split("x")
    return int(r) * int(k)


def _kib(b: int) -> str:
    return f"{b / 1024:.1f}"


def cost_table_html(report: dict[str, Any]) -> str:
    """The per-layer cost table of a :func:`cost_report` as an HTML fragment (a ``<table>``)."""
    e = html.escape
    head = ("layer", "runs on", "op", "engine", "MACs", "cycles", "compute", "DMA", "overhead", "latency us",
            "util.", "weights KiB", "on-chip act KiB", "DRAM KiB/img", "tiles w x rows")
    out = ['<table class="accel-cost">', "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead>",
           "<tbody>"]
    for c in report["layers"]:
        if c["placement"] != "accelerator":
            cells = [c["name"], "host CPU", c.get("op", ""), "-", f"{c['macs']:,}" if c.get("macs") else "-"]
            out.append("<tr class=\"host\">" + "".join(f"<td>{e(v)}</td>" for v in cells)
                       + f"<td colspan=\"{len(head) - len(cells)}\">{e('; '.join(c['reasons']))}</td></tr>")
            continue
        t = c["tiles"]
        w = f"{_kib(c['weight_bytes'])} {'resident' if c['weights_resident'] else 'streamed'}"
        cells = [c["name"], "accelerator", c["op"], f"{c['engine']} {c['array']} ({c['weight_format']})",
                 f"{c['macs']:,}", f"{c['cycles']:,}", f"{c['compute_cycles']:,}", f"{c['dma_cycles']:,}",
                 f"{c['overhead_cycles']:,}", f"{c['latency_us']:.1f}", f"{c['utilisation']:.0%}", w,
                 _kib(c["onchip_bytes"]["act_in"] + c["onchip_bytes"]["act_out"]),
                 _kib(c["traffic_bytes"]["total"]), f"{t['weight_tiles']} x {t['row_tiles']}"]
        out.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in cells) + "</tr>")
    t = report["totals"]
    thr = f"{t['throughput_per_s']:,.0f}/s" if t["throughput_per_s"] else "-"
    out.append(f"</tbody><tfoot><tr><td>total</td><td colspan=\"4\">{t['layers_on_accelerator']} on the accelerator, "
               f"{t['layers_on_host']} on the host</td><td>{t['cycles']:,}</td><td colspan=\"3\"></td>"
               f"<td>{t['latency_us']:.1f}</td><td colspan=\"5\">{e(thr)} (accelerator layers only)</td></tr></tfoot>")
    out.append("</table>")
    return "\n".join(out)


__all__ = ["cost_report", "cost_table_html", "layer_cost", "traffic"]
