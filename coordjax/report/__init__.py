"""Reproduction reports: a sweep's workdir as the paper's figures and a paper-vs-ours table.

    coordjax report WORKDIR        # writes WORKDIR/report/report.md and PNG figures

The report is the last stage of the data flow: it reads only the workdir (config.json,
results.csv, checkpoints) and nothing upstream imports it. Importing it imports neither JAX nor
the training code; the figures that need model outputs import the models and load parameters
lazily, onto whatever device this machine has.
"""

from coordjax.report.build import write_report as write_report
from coordjax.report.source import ReportError as ReportError
from coordjax.report.source import SweepRecord as SweepRecord
from coordjax.report.source import read as read

__all__ = ["ReportError", "SweepRecord", "read", "write_report"]
