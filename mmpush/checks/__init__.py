"""Checks of what clients see, shared by the `mmpush` command and the verify suite.

from mmpush.checks import check_certificate
report = check_certificate("push.example.com", 443)
if not report.ok:
    print([finding.message for finding in report.findings])
"""

from mmpush.checks.certificate import (
    CertificateReport,
    CertificateSummary,
    ChainAnalysis,
    CheckError,
    Finding,
    analyse_chain,
    check_certificate,
    load_trust_anchors,
    parse_target,
)

__all__ = [
    "CertificateReport",
    "CertificateSummary",
    "ChainAnalysis",
    "CheckError",
    "Finding",
    "analyse_chain",
    "check_certificate",
    "load_trust_anchors",
    "parse_target",
]
