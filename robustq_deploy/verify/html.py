"""The verification report as one self-contained HTML page (plots embedded as base64 PNG).

The page a person reads: what model this is (source, graph summary, bit widths, method, checkpoint,
tool versions) and the ``check`` verdict first; accuracies with 95% confidence intervals; example
adversarial images (clean, adversarial, difference) for a few points each engine lost; validity
checks (skipped ones marked); latency with the thread count behind it, emulated or simulated
engines labelled as such. Plots (matplotlib, Agg backend): accuracy against eps (only when there
is a sweep); robust accuracy after each attack of the ensemble, per model; per-layer error
amplification of twin and float model under adversarial and random perturbations.
To add a plot, write ``fn(report) -> Figure | None`` and add it to :data:`PLOTS`.
"""
from __future__ import annotations

import base64
import html
import io
import json
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the headless backend)
from matplotlib.figure import Figure  # noqa: E402


def _model_order(report: dict[str, Any]) -> list[str]:
    return [m for m in ("float", "twin", "onnx-twin") if m in report["models"]] + list(report["deployed"])


_STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--")]  # overlapping lines stay visible


def plot_eps(report: dict[str, Any]) -> Figure | None:
    sweep = report.get("eps_sweep") or []
    if not sweep:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, name in enumerate(_model_order(report)):
        m = report["models"][name]
        pts = sorted([(0.0, m["clean_acc"])] + [(r["eps"], r[name]) for r in sweep if name in r])
        marker, style = _STYLES[i % len(_STYLES)]
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, markerfacecolor="none",
                        linewidth=2.5 - 0.4 * (i % 4), label=name)
        ax.scatter([report["threat"]["eps"]], [m["robust_acc"]["worst_case"]], marker="*", s=120,
                   color=line.get_color(), zorder=3)
    ax.set_xlabel(f"eps ({report['threat']['norm']})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("accuracy vs eps (lines: sweep attacks; stars: all attacks at eps)")
    ax.legend()
    return fig


def plot_attacks(report: dict[str, Any]) -> Figure | None:
    models = _model_order(report)
    attacks = [a["name"] for a in report["attacks"]] + ["worst_case"]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(attacks) * max(1, len(models)) / 2), 4))
    width = 0.8 / max(len(models), 1)
    for i, name in enumerate(models):
        ra = report["models"][name]["robust_acc"]
        vals = [ra.get(a, float("nan")) for a in attacks]
        ax.bar([k + i * width for k in range(len(attacks))], vals, width, label=name)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(attacks))], ["+" + a for a in attacks[:-1]] + ["worst case"])
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("robust accuracy after each attack (run on points still robust)")
    ax.legend()
    return fig


def plot_amplification(report: dict[str, Any]) -> Figure | None:
    amp = report.get("amplification")
    if not amp or not amp.get("layers"):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("float", "twin"):
        for kind, style in (("adversarial", "-"), ("random", "--")):
            vals = amp.get(name, {}).get(kind) or []
            if vals:
                ax.plot(amp["layers"], vals, style, marker="o", label=f"{name}, {kind} d")
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("||f_l(x+d) - f_l(x)|| / ||d||")
    ax.set_title("per-layer error amplification")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    return fig


PLOTS: list[Callable[[dict[str, Any]], Figure | None]] = [plot_eps, plot_attacks, plot_amplification]


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
        ".fail{color:#b00;font-weight:bold}.pass{color:#070}.skip{color:#a60;font-weight:bold}"
        "pre{background:#f6f6f6;padding:1em}.facts td{text-align:left}"
        ".ex img{width:84px;height:84px;image-rendering:pixelated;border:1px solid #999;margin:2px}"
        ".ex td{text-align:center}.verdict{font-size:1.2em;padding:.5em;border:2px solid}")


def _facts(report: dict[str, Any]) -> str:
    f = report.get("model") or {}
    rows = [["source", f.get("source", "-")], ["training method", f.get("method", "-")]]
    onnx_f = f.get("onnx")
    if onnx_f:
        bits = onnx_f.get("bits", {})
        rows += [["ONNX graph", f"{onnx_f['path']} (sha256 {onnx_f['sha256'][:16]}...)"
                  + (", not recorded by robustq" if onnx_f.get("external") else "")],
                 ["graph", f"{onnx_f['form']}; {onnx_f['nodes']} nodes, {onnx_f['parameters']:,} parameters; "
                           f"producer {onnx_f['producer']}; opsets "
                           + ", ".join(f"{d} {v}" for d, v in onnx_f["opsets"].items())],
                 ["operators", ", ".join(f"{o} x{c}" for o, c in onnx_f["ops"].items())],
                 ["bit widths", f"weights {', '.join(bits.get('weights', [])) or '-'}; "
                                f"activations {', '.join(bits.get('activations', [])) or '-'}"],
                 ["input / output", f"{onnx_f.get('input') or '-'}; output: {onnx_f.get('output') or '-'}"]]
    ck = f.get("checkpoint")
    if ck:
        rows.append(["checkpoint", f"{ck['path']} (sha256 {ck['sha256'][:16]}...): {ck['arch']}, {ck['method']}, "
                                   f"weights {ck['bits']['weights']}-bit, activations {ck['bits']['activations']}-bit"])
    else:
        rows.append(["checkpoint", "none: white-box attacks differentiate the ONNX twin"])
    twins = f.get("twins", {})
    rows.append(["twins", "; ".join(f"{n}: {d}" + (" (white-box)" if n == f.get("white_box_twin") else "")
                                    for n, d in twins.items()) or "-"])
    if f.get("onnx_twin_unavailable"):
        rows.append(["ONNX twin", f"not available: {f['onnx_twin_unavailable']}"])
    if f.get("surrogate"):
        rows.append(["surrogate", f"{f['surrogate']['path']} ({f['surrogate']['kind']})"])
    tools = f.get("tools", {})
    rows.append(["tool versions", ", ".join(f"{k} {v}" for k, v in tools.items())])
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<h2>Model</h2><table class='facts'>{body}</table>"


def _verdict(report: dict[str, Any]) -> str:
    v = report.get("verdict")
    if v is None:
        return ""
    ok = v["passed"]
    text = (f"check (validity checks, no thresholds): {'PASS' if ok else 'FAIL'}"
            + (f"; failed: {', '.join(v['failed'])}" if v["failed"] else "")
            + (f"; NOT CHECKED: {', '.join(v['skipped'])}" if v["skipped"] else ""))
    return f"<p class='verdict {'pass' if ok else 'fail'}'>{html.escape(text)}</p>"


def _ci(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci95") or {}).get(key)
    return f"{ci[0]:.3f} - {ci[1]:.3f}" if ci else "-"


def _examples(report: dict[str, Any]) -> str:
    ex = report.get("examples") or {}
    if not ex:
        return ""
    parts = ["<h2>Adversarial examples</h2><p>Points each engine lost to an attack: the clean image, the "
             "adversarial image it was shown (on the uint8 grid) and their difference (grey = 0, white/black = "
             f"+/-eps {report['threat']['eps']:g}).</p>"]
    for eng, rows in ex.items():
        cells = "".join(
            f"<td><img alt='clean' src='data:image/png;base64,{r['clean_png']}'>"
            f"<img alt='adversarial' src='data:image/png;base64,{r['adv_png']}'>"
            f"<img alt='difference' src='data:image/png;base64,{r['diff_png']}'><br>"
            f"test point {r['index']}: label {r['label']}, clean {r['clean_pred']}, adversarial {r['adv_pred']} "
            f"(L-inf {r['linf']:.3f})</td>" for r in rows)
        parts.append(f"<h3>{html.escape(eng)}</h3><table class='ex'><tr>{cells}</tr></table>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    th = report["threat"]
    attacks = [a["name"] for a in report["attacks"]]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>robustq verify report</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>robustq verify: {html.escape(report['dataset'])}, n={report['n']}, {th['norm']} eps={th['eps']:g}</h1>",
             f"<p>artifact <code>{html.escape(report['artifact']['path'])}</code> "
             f"(sha256 {report['artifact']['sha256'][:16]}...); deployed engines: {html.escape(', '.join(report['deployed']))}"
             + (f"; device {html.escape(report['device'])}" if report.get("device") else "") + "</p>"]
    parts.append(_verdict(report))
    flags = report.get("flags", [])
    parts.append(f"<p class='{'fail' if flags else 'pass'}'>"
                 + (f"{len(flags)} validity flag(s): " + html.escape("; ".join(f['message'] for f in flags))
                    if flags else "no validity flags") + "</p>")
    parts.append(_facts(report))
    rows = [[name, m["clean_acc"], *[m["robust_acc"].get(a, "-") for a in attacks], m["robust_acc"]["worst_case"],
             _ci(m, "clean"), _ci(m, "worst_case")]
            for name, m in report["models"].items()]
    crafted = "; ".join(f"{a['name']}: " + (f"crafted on {a['crafted_on']}" if a.get("crafted_on")
                                            else "queries each deployed engine") for a in report["attacks"])
    parts += ["<h2>Accuracy</h2><p>Attacks run in this order, each only on the points still robust; "
              "the worst case is per point over all attacks. Inputs are scored on the uint8 grid. "
              f"95% confidence intervals (Wilson) for n={report['n']}. {html.escape(crafted)}.</p>",
              _table(["model", "clean", *[f"+{a}" for a in attacks], "worst case", "95% CI clean", "95% CI worst case"],
                     rows)]
    parts.append(_examples(report))
    for fig in (p(report) for p in PLOTS):
        if fig is not None:
            parts.append(f"<img alt='plot' src='data:image/png;base64,{_png(fig)}'>")
    parts += ["<h2>Validity checks</h2><p>Skipped checks were not run: what they guard against is not ruled out.</p>",
              "<table><tr><th>status</th><th>check</th><th>message</th></tr>" + "".join(
                  f"<tr><td class='{r['status']}'>{r['status']}</td><td>{html.escape(r['name'])}</td>"
                  f"<td style='text-align:left'>{html.escape(r['message'])}</td></tr>" for r in report.get("validity", []))
              + "</table>"]
    if report["agreement"]:
        parts += ["<h2>Twin vs deployed agreement (argmax)</h2>",
                  _table(["engine", "clean", "adversarial"],
                         [[e, a["clean"], a["adversarial"]] for e, a in report["agreement"].items()])]
    q = report.get("queries", {})
    if q:
        targets = sorted({t for per in q.values() for t in per})
        parts += ["<h2>Model calls per attack (points queried)</h2>",
                  _table(["attack", *targets], [[a, *[per.get(t, 0) for t in targets]] for a, per in q.items()])]
    lat = report.get("timing", {}).get("latency", {})
    if lat:
        parts += ["<h2>Latency</h2><p>Median over repeated calls on this machine. Emulated and simulated engines "
                  "run far slower than the device they stand for: their latency is not the device's.</p>",
                  _table(["engine", "runs as", "threads", "ms at batch 1", "ms/image at batch 64"],
                         [[e, v.get("emulated") or "native", f"{v.get('threads') or '-'} ({v.get('source', '-')})",
                           v["batch1_ms"], v["batch64_ms_per_image"]] for e, v in lat.items()])]
    for eng, entry in report.get("engines", {}).items():
        place = entry.get("placement")
        if place:
            parts += [f"<h2>Where {html.escape(eng)} runs each layer ({html.escape(str(place['accelerator']))}, "
                      f"{place['cycles_per_image']:,} cycles per image)</h2>",
                      _table(["layer", "runs on", "op", "cycles", "why on the host"],
                             [[p["layer"], p["placement"], p["op"], "-" if p["cycles"] is None else p["cycles"],
                               "; ".join(p["reasons"]) or "-"] for p in place["layers"]])]
    for sel, why in report.get("missing_engines", {}).items():
        parts.append(f"<p class='fail'>not verified: {html.escape(sel)}: {html.escape(why)}</p>")
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(report.get('config', {}), indent=2))}</pre>",
              "</body></html>"]
    return "\n".join(parts) + "\n"
