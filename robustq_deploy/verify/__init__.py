"""Verification of the deployed artifact: robustness under an attack ensemble, twin-vs-deployed
agreement, validity checks, reports (JSON, text, HTML, JUnit) and CI thresholds (``check``).

Layout: :mod:`.plan` (config -> attacks, budgets), :mod:`.engines` (deployed modules as black
boxes, float view), :mod:`.models` (the checkpoint twin, the ONNX twin, a surrogate), :mod:`.data`
(test points), :mod:`.rpc` (remote device), :mod:`.state` (resumable units), :mod:`.robustness`
(the stage), :mod:`.validity`, :mod:`.facts` (model facts, confidence intervals, example images),
:mod:`.amplification`, :mod:`.html`, :mod:`.check`.
"""
from .check import check_report, junit_xml, read_report, run_checks
from .robustness import HTML_NAME, JUNIT_NAME, REPORT_NAME, SUMMARY_NAME, evaluate, summary_text, verify_stage

__all__ = ["check_report", "junit_xml", "read_report", "run_checks", "HTML_NAME", "JUNIT_NAME", "REPORT_NAME",
           "SUMMARY_NAME", "evaluate", "summary_text", "verify_stage"]
