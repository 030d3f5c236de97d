"""Helpers for lab tests: run the real commands a user types, and look for leftovers."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

LAB_PROGRAMS = ("systemd-nspawn", "pebble", "pebble-challtestsrv")

SshRunner = Callable[..., subprocess.CompletedProcess[str]]


def mmpush(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real `mmpush` command."""
    return subprocess.run(
        [str(BIN / "mmpush"), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def pyinfra(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real `pyinfra` command from the repository root, as a user would."""
    return subprocess.run(
        [str(BIN / "pyinfra"), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def leftovers() -> list[str]:
    """Whatever of the lab still exists on this machine."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n}" for n in netns.split() if n.startswith("mmplab-")]
    # zombies are dead (their parent, PID 1 here, reaps them a moment later): not leftovers
    processes = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True)
    for line in processes.stdout.splitlines():
        stat, _, args = line.strip().partition(" ")
        program = args.split(" ", 1)[0].rsplit("/", 1)[-1]
        if not stat.startswith("Z") and program in (
            "systemd-nspawn",
            "pebble",
            "pebble-challtestsrv",
        ):
            found.append(f"process {args}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {t}" for t in tables.splitlines() if "mmpush_lab" in t]
    return found


def deploy(
    deploy_file: str, *data: str, dry: bool = False, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``pyinfra [-y] inventories/lab.py deploys/<file> --data k=v ...`` as a user types it."""
    args = [] if dry else ["-y"]
    for item in data:
        args += ["--data", item]
    return pyinfra(*args, *extra, "inventories/lab.py", deploy_file, *(["--dry"] if dry else []))


def grand_total(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """pyinfra's closing "Grand total" row: {"operations", "success", "error", "no_change"}."""
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip().startswith("Grand total"):
            cells = line.split()[2:]
            values = [0 if cell == "-" else int(cell) for cell in cells]
            return dict(zip(["operations", "success", "error", "no_change"], values, strict=True))
    raise AssertionError(f"no Grand total in pyinfra's output:\n{result.stdout}\n{result.stderr}")


def planned_changes(*data: str, deploy_file: str = "deploys/eas.py") -> dict[str, list[str]]:
    """What ``--dry --json`` says would change: {operation name: [hosts]} (conditional
    operations, which depend on another one changing, are listed with a ``?`` suffix)."""
    args = ["inventories/lab.py", deploy_file, "--dry", "--json"]
    for item in data:
        args += ["--data", item]
    result = pyinfra(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)["plan"]
    changes: dict[str, list[str]] = {}
    for op in plan:
        if op["hosts_with_change"]:
            changes[op["name"]] = op["hosts_with_change"]
        if op["hosts_with_conditional_change"]:
            changes[op["name"] + "?"] = op["hosts_with_conditional_change"]
    return changes


def verify(*data: str, inventory: str = "inventories/lab.py") -> VerifyRun:
    """``pytest tests/verify --inventory inventories/lab.py [--data k=v ...]``, as ops run it,
    with each check's outcome read from its JUnit XML report (see :class:`VerifyRun`)."""
    with tempfile.TemporaryDirectory(prefix="mmpush-verify-") as tmp:
        report = Path(tmp) / "verify.xml"
        args = [str(BIN / "pytest"), "tests/verify", "--inventory", inventory, "-q"]
        args += ["-p", "no:cacheprovider", f"--junitxml={report}"]
        for item in data:
            args += ["--data", item]
        result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
        outcomes = parse_junit(report.read_text()) if report.exists() else []
    return VerifyRun(result.returncode, result.stdout, result.stderr, outcomes)


@dataclass(frozen=True)
class Outcome:
    """One verify check on one host: ``test_eas.py::test_x[push1]`` passed, skipped, failed."""

    module: str
    name: str
    outcome: str
    message: str = ""

    @property
    def test(self) -> str:
        """The check's name without its host: ``test_x``."""
        return self.name.split("[", 1)[0]


def parse_junit(xml: str) -> list[Outcome]:
    """Every test case of a pytest JUnit XML report, with its outcome."""
    outcomes = []
    for case in ElementTree.fromstring(xml).iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1] + ".py"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("skipped", "failure", "error"):
                outcome = {"skipped": "skipped", "failure": "failed", "error": "error"}[child.tag]
                message = child.get("message", "")
        outcomes.append(Outcome(module, case.get("name", ""), outcome, message))
    return outcomes


@dataclass(frozen=True)
class VerifyRun:
    """What a run of the verify suite did, check by check."""

    returncode: int
    stdout: str
    stderr: str
    outcomes: list[Outcome]

    def named(self, outcome: str) -> list[str]:
        return sorted(f"{o.module}::{o.name}" for o in self.outcomes if o.outcome == outcome)

    def assert_passed(self, expected_skips: dict[str, str] | None = None) -> None:
        """The run passed, every check ran, and the only skips are ``expected_skips``
        (``{"test_module.py::test_name[host]": "text in the skip reason"}``, stated by the
        test): a run that skipped its way to green fails here."""
        expected_skips = expected_skips or {}
        problems = self.named("failed") + self.named("error")
        assert self.returncode == 0 and not problems, (
            f"verify failed ({self.returncode}): {problems}\n{self.stdout[-4000:]}"
        )
        assert self.outcomes, f"verify ran no check:\n{self.stdout[-2000:]}"
        skipped = {
            f"{o.module}::{o.name}": o.message for o in self.outcomes if o.outcome == "skipped"
        }
        unexpected = [(n, skipped[n]) for n in sorted(set(skipped) - set(expected_skips))]
        assert not unexpected, f"checks skipped that must run: {unexpected}"
        missing = sorted(set(expected_skips) - set(skipped))
        assert not missing, f"checks that should have been skipped but ran: {missing}"
        for name, reason in expected_skips.items():
            assert reason in skipped[name], f"{name} skipped for {skipped[name]!r}, not {reason!r}"

    def passed_count(self) -> int:
        return len(self.named("passed"))

    def failures_naming(self, text: str) -> list[str]:
        """Failed checks whose message or name mentions ``text`` (a host, a variable)."""
        return [
            f"{o.module}::{o.name}"
            for o in self.outcomes
            if o.outcome in ("failed", "error") and (text in o.message or text in o.name)
        ]


# --- what the verify suite must run on the lab, mode by mode (stated here, not computed) ----

#: The outbound proxy's checks (tests/verify/test_outbound_proxy.py): proxy1, hpns mode only.
OUTBOUND_CHECKS = (
    "test_nginx_is_running_and_starts_at_boot",
    "test_nginx_config_is_valid",
    "test_proxy_listens_on_its_port",
    "test_port_80_is_open_only_for_acme_http01",
    "test_proxy_certificate_passes_check_cert",
    "test_clients_trust_the_proxy_certificate",
    "test_proxy_certificate_is_not_about_to_expire",
    "test_proxy_speaks_tls_1_2_or_1_3",
    "test_proxy_refuses_tls_1_1",
    "test_proxy_sends_hsts",
    "test_version_is_forwarded_to_the_upstream",
    "test_a_push_through_the_proxy_is_accepted",
    "test_only_the_push_api_is_forwarded",
    "test_clients_outside_the_allowed_networks_are_refused",
    "test_the_upstream_verifies_as_the_proxy_checks_it",
    "test_upstream_certificate_and_name_are_verified",
    "test_upstream_is_reached_as_configured",
    "test_only_allowed_networks_may_connect",
)
#: The push proxy's checks (tests/verify/test_eas.py): push1, eas mode only.
EAS_CHECKS = (
    "test_push_proxy_is_running_and_starts_at_boot",
    "test_push_proxy_runs_as_its_own_user_not_root",
    "test_push_proxy_comes_back_after_a_crash",
    "test_push_proxy_is_sandboxed",
    "test_push_proxy_is_reachable_only_through_nginx",
    "test_nginx_listens_on_https_and_on_http_only_for_acme",
    "test_the_configured_release_is_the_current_one",
    "test_push_proxy_reports_the_configured_version",
    "test_push_proxy_config_is_private_and_on_loopback",
    "test_push_proxy_knows_every_configured_app",
    "test_credentials_are_readable_only_by_the_push_proxy",
    "test_credentials_on_the_host_are_the_configured_ones",
    "test_nginx_config_is_valid",
    "test_nginx_never_enables_tls_1_0_or_1_1",
    "test_nginx_hides_its_version",
    "test_debian_default_site_is_gone",
    "test_clients_trust_the_push_certificate",
    "test_push_certificate_passes_check_cert",
    "test_push_certificate_is_not_about_to_expire",
    "test_push_certificate_files_are_not_about_to_expire",
    "test_push_url_speaks_tls_1_2_or_1_3",
    "test_push_url_refuses_tls_1_1",
    "test_push_url_sends_hsts",
    "test_plain_http_redirects_to_https",
    "test_acme_challenges_are_served_on_port_80",
    "test_every_app_types_credentials_are_accepted",
    "test_only_the_push_api_is_served_and_metrics_are_not_public",
    "test_clients_outside_the_allowed_networks_are_refused",
)
#: The lab's Mattermost servers: mm1 (config.json), mm2 and mm3 (a database-configured cluster).
MATTERMOST_HOSTS = ("mm1", "mm2", "mm3")


def lab_skips(
    mode: str, outbound_proxy: bool = True, mattermost: tuple[str, ...] = MATTERMOST_HOSTS
) -> dict[str, str]:
    """The verify checks that must be skipped on the lab in ``mode``, each with the text its
    skip reason must contain. Everything else must run and pass."""
    skips: dict[str, str] = {}
    if mode != "eas":
        skips.update({f"test_eas.py::{t}[push1]": "not 'eas'" for t in EAS_CHECKS})
    else:
        # the lab's front lets everyone in (push_front_allowed_networks is empty), and its
        # certificate comes from ACME (HTTP-01), not from files
        skips["test_eas.py::test_clients_outside_the_allowed_networks_are_refused[push1]"] = (
            "push_front_allowed_networks is empty"
        )
        skips["test_eas.py::test_push_certificate_files_are_not_about_to_expire[push1]"] = (
            "is not 'files'"
        )
    if mode != "hpns" or not outbound_proxy:
        skips.update(
            {f"test_outbound_proxy.py::{t}[proxy1]": "not 'hpns'" for t in OUTBOUND_CHECKS}
        )
    for mm in mattermost:
        if mode != "off":
            skips[f"test_modes.py::test_off_mode_sends_no_push_and_names_no_server[{mm}]"] = (
                "not 'off'"
            )
        else:
            check = "test_mattermost_reaches_its_push_service_over_trusted_tls"
            skips[f"test_modes.py::{check}[{mm}]"] = "has no server"
    return skips


# --- pushes ----------------------------------------------------------------------------------


def apple_device() -> str:
    """A new iPhone (apple_rn) device id: APNs tokens are 64 hex digits."""
    return f"apple_rn-v2:{secrets.token_hex(32)}"


def android_device(number: int) -> str:
    """An Android (android_rn) device id the lab's FCM stand-in knows (1 to 50)."""
    return f"android_rn-v2:lab-android-{number:04d}"


def send_dm(state: dict[str, Any], text: str, device: str, mm: str = "mm1") -> dict[str, Any]:
    """Account B sends Account A a DM on lab server ``mm``; Account A's phone is ``device``."""
    from mmpush.mmapi import MattermostClient, send_direct_message

    ip = next(h["ip"] for h in state["hosts"] if h["name"] == mm)
    return send_direct_message(
        MattermostClient(f"http://{ip}:8065"), "accountb", "accounta", text, device
    )


def pushes(post_id: str, device: str | None = None, count: int = 1, timeout: float = 30) -> list:
    """The lab's push records (:class:`mmpush.lab.pushes.PushRecord`) of ``post_id``, for
    ``device`` only if given, once there are ``count`` (Mattermost pushes asynchronously)."""
    from mmpush.lab.layout import LabPaths
    from mmpush.lab.pushes import find_push_records

    token = device.split(":", 1)[1] if device else None
    deadline = time.monotonic() + timeout
    while True:
        records = [
            r
            for r in find_push_records(LabPaths.default(), post_id)
            if token is None
            or token in (r.data.get("device_id"), (r.data.get("body") or {}).get("device_id"))
        ]
        if len(records) >= count or time.monotonic() >= deadline:
            return records
        time.sleep(0.5)


def revoked_apple_data(fixtures: dict[str, str]) -> str:
    """``--data`` giving the push proxy the lab's revoked APNs key (LABKEY0002), which the APNs
    stand-in answers with 403 InvalidProviderToken, as Apple does for a revoked key."""
    entry = {
        "type": "apple_rn",
        "topic": "com.mattermost.rnbeta",
        "auth_key_file": fixtures["apns_revoked_key"],
        "auth_key_id": "LABKEY0002",
        "team_id": "LABTEAM001",
    }
    return f"push_proxy_apple={json.dumps([entry])}"
