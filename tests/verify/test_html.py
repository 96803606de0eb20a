"""The HTML page is self-contained: three embedded PNG plots, no external references."""
import base64
import json

from robustq_deploy.verify.html import render_html


def test_html_embeds_plots_and_escapes_text(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    report["validity"][0]["message"] = "<script>alert(1)</script>"
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<script>" not in page and "&lt;script&gt;" in page
    pngs = [chunk.split("'")[0] for chunk in page.split("data:image/png;base64,")[1:]]
    assert len(pngs) == 3 and all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert "src='http" not in page and "href=" not in page


def test_html_without_sweep_or_amplification(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    report["eps_sweep"], report["amplification"] = [], {"layers": []}
    assert render_html(report).count("data:image/png;base64,") == 2
