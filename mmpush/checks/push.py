"""A probe push with an obviously fake device token, and what the push service's answer says
about the path and the credentials behind it. Used by the verify suite and the runbooks.

A fake token is never delivered: Apple and Google refuse it. How they refuse it tells whether
the push proxy's credentials work: APNs answers ``BadDeviceToken`` (the proxy answers
REMOVE) only to a sender whose token key it accepted; FCM answers ``INVALID_ARGUMENT`` ("not a
valid FCM registration token", the proxy answers FAIL with that text) only after the service
account's OAuth2 grant worked. Rejected credentials give other answers.

    body = probe_body("apple_rn")
    verdict = push_verdict("apple_rn", 200, '{"status":"REMOVE"}')
    verdict.accepted, verdict.summary
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: Never a real device: APNs (64 hex digits) and FCM refuse it as malformed.
FAKE_DEVICE_TOKEN = "mmpush-probe-not-a-real-device"

#: What a FAIL answer's error says when Apple or Google refused the sender (push proxy
#: v6.5.0: APNs InvalidProviderToken is "unknown send response error"; the Google OAuth2
#: grant and FCM authentication errors keep Google's words).
REJECTED_MARKERS = (
    "unknown send response error",
    "invalid_grant",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "permission-denied",
    "THIRD_PARTY_AUTH_ERROR",
    "third-party-auth-error",
    "unauthenticated",
)
#: A FAIL answer when the push proxy has no working client for the type at all (its
#: credentials were refused when it started).
NOT_INITIALISED = "missing platform property"
#: The Go OAuth2 client's words when Google's token endpoint would not grant a token (it
#: retries a refused grant until its deadline, so the reason is often a timeout).
OAUTH_FAILURE = "oauth2: cannot fetch token"
#: FCM's answer to a malformed registration token: the request was authorised.
FCM_BAD_TOKEN_MARKERS = (
    "not a valid FCM registration token",
    "INVALID_ARGUMENT",
    "invalid-argument",
)


@dataclass(frozen=True)
class PushVerdict:
    """What one probe showed for one app type."""

    app_type: str
    accepted: bool
    verdict: str
    evidence: str

    @property
    def summary(self) -> str:
        return f"{self.app_type}: {self.verdict} ({self.evidence})"


def probe_body(app_type: str) -> dict[str, object]:
    """The JSON body of a probe push for ``app_type`` (server ``mmpush-probe``)."""
    return {
        "platform": app_type,
        "server_id": "mmpush-probe",
        "device_id": FAKE_DEVICE_TOKEN,
        "type": "message",
        "version": "v2",
        "message": "mmpush probe (a fake device: never delivered)",
    }


def push_verdict(app_type: str, http_status: int, body: str) -> PushVerdict:
    """Read the push service's answer to a probe for ``app_type``."""
    evidence = f"HTTP {http_status} {body.strip()[:300]}"
    try:
        answer = json.loads(body)
    except json.JSONDecodeError:
        answer = None
    if http_status != 200 or not isinstance(answer, dict):
        return PushVerdict(app_type, False, "the push service did not answer as one", evidence)
    status = answer.get("status")
    error = str(answer.get("error") or "")
    if status in ("OK", "REMOVE"):
        return PushVerdict(app_type, True, "path OK, credentials accepted", evidence)
    if status == "FAIL" and NOT_INITIALISED in error:
        return PushVerdict(
            app_type,
            False,
            "no working credentials for this app type (refused when the push proxy started: "
            "see its journal)",
            evidence,
        )
    if status == "FAIL" and any(m in error for m in REJECTED_MARKERS):
        return PushVerdict(app_type, False, "credentials rejected by Apple or Google", evidence)
    if status == "FAIL" and OAUTH_FAILURE in error:
        return PushVerdict(
            app_type,
            False,
            "no access token from Google (the service account is unknown or revoked, or "
            "oauth2.googleapis.com cannot be reached)",
            evidence,
        )
    if status == "FAIL" and app_type.startswith("android") and any(
        m in error for m in FCM_BAD_TOKEN_MARKERS
    ):
        return PushVerdict(app_type, True, "path OK, credentials accepted", evidence)
    return PushVerdict(app_type, False, "the push failed", evidence)
