"""Verification of the deployed artifact: robustness, twin-vs-deployed parity, CI checks."""
from .check import check_report, junit_xml, read_report, run_checks
from .robustness import REPORT_NAME, SUMMARY_NAME, evaluate, summary_text, verify_stage

__all__ = ["check_report", "junit_xml", "read_report", "run_checks", "REPORT_NAME", "SUMMARY_NAME",
           "evaluate", "summary_text", "verify_stage"]
