"""`mmpush check-cert HOST[:PORT]`: a server's certificate as the mobile apps see it.

    mmpush check-cert push.example.com
    mmpush check-cert push.example.com:8443 --connect 10.0.0.5 --ca-bundle ca.pem --json

Exit codes: 0 no error finding, 1 an error finding, 2 a usage error (bad target, bad bundle).
The lead registers it with ``main.add_command(check_cert)`` in mmpush/cli.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mmpush.checks.certificate import (
    CHECKS,
    DEFAULT_DAYS,
    DEFAULT_TIMEOUT,
    ERROR,
    UNREACHABLE,
    WARNING,
    CertificateReport,
    CheckError,
    check_certificate,
    parse_target,
)


def render_text(report: CertificateReport) -> list[str]:
    """The report for people: a header, one line per check (OK/FAIL/WARN with its evidence),
    the chain the server sent, and the verdict.

    for line in render_text(report): print(line)
    """
    lines = [
        f"{report.target}: SNI {report.name}, address {report.address or '-'}, "
        f"TLS {report.tls_version or '-'}, trusting {report.trust_source}"
    ]
    unreachable = UNREACHABLE in report.ids
    for check, ids in CHECKS.items():
        problems = [f for f in report.findings if f.id in ids and f.severity in (ERROR, WARNING)]
        for finding in problems:
            status = "FAIL" if finding.severity == ERROR else "WARN"
            lines.append(f"{status:<5} {check:<12} {finding.id}: {finding.message}")
        if problems:
            continue
        if unreachable:
            lines.append(f"{'SKIP':<5} {check:<12} not checked: the server was not reached")
        else:
            lines.append(f"{'OK':<5} {check:<12} {report.evidence.get(check, '')}")
    if report.chain:
        lines.append("chain sent by the server:")
    for position, entry in enumerate(report.chain):
        sans = f"  SANs {', '.join(entry.sans)}" if entry.sans else ""
        lines.append(
            f"  {position} subject {entry.subject}  issuer {entry.issuer}  "
            f"expires {entry.not_after}{sans}"
        )
    errors = sum(finding.severity == ERROR for finding in report.findings)
    lines.append("Result: OK" if report.ok else f"Result: FAIL ({errors} error(s))")
    return lines


@click.command("check-cert")
@click.argument("target")
@click.option("--name", help="Name to check and send as SNI (default: HOST).")
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trust only the roots in this PEM file instead of the system store.",
)
@click.option(
    "--days",
    type=click.IntRange(min=0),
    default=DEFAULT_DAYS,
    show_default=True,
    help="Fail when the certificate has fewer days left.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds for each connect and handshake.",
)
@click.option("--connect", "address", help="Connect to this address instead of HOST's.")
def check_cert(
    target: str,
    name: str | None,
    ca_bundle: Path | None,
    days: int,
    as_json: bool,
    timeout: float,
    address: str | None,
) -> None:
    """Check TARGET's (HOST[:PORT]) certificate as the Mattermost mobile apps see it: the
    full chain sent (no AIA fetching), trusted, not self-signed, the name, the expiry, TLS
    1.2+. Exits 1 on any error finding."""
    try:
        host, port = parse_target(target)
    except CheckError as error:
        raise click.BadParameter(str(error), param_hint="TARGET") from error
    try:
        report = check_certificate(
            host,
            port,
            name=name,
            ca_bundle=ca_bundle,
            days=days,
            timeout=timeout,
            connect=address,
        )
    except CheckError as error:
        raise click.UsageError(str(error)) from error
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo("\n".join(render_text(report)))
    sys.exit(0 if report.ok else 1)
