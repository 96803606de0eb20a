"""The HTML page is self-contained: embedded PNG plots and example images, no external references;
model facts, the check verdict and confidence intervals come first."""
import base64
import json

from robustq_deploy.verify.html import render_html


def _plots(page: str) -> int:
    return page.count("<img alt='plot' src='data:image/png;base64,")


def test_html_embeds_plots_and_escapes_text(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    report["validity"][0]["message"] = "<script>alert(1)</script>"
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<script>" not in page and "&lt;script&gt;" in page
    pngs = [chunk.split("'")[0] for chunk in page.split("data:image/png;base64,")[1:]]
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert _plots(page) == 3  # accuracy vs eps (there is a sweep), per attack, amplification
    n_examples = sum(len(rows) for rows in report["examples"].values())
    assert n_examples > 0 and len(pngs) == 3 + 3 * n_examples  # clean, adversarial, difference per example
    assert "src='http" not in page and "href=" not in page
    for text in ("check (validity checks, no thresholds)", "training method", "bit widths", "tool versions",
                 "95% CI worst case", "Adversarial examples", "threads"):
        assert text in page, text


def test_html_without_sweep_or_amplification(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    report["eps_sweep"], report["amplification"] = [], {"layers": []}
    assert _plots(render_html(report)) == 1  # no sweep: no accuracy-vs-eps plot
