"""Typed, validated settings: the only way deploy code reads host data.

Every value comes from pyinfra host data (``group_data/*.py``, the inventory, ``--data``).
``load_settings(host)`` checks all of it before any operation is generated, and every error
names the host, the key, the bad value and what is allowed:

    from pyinfra import host
    settings = load_settings(host)
    settings.eas.push_name            # "push.example.com"
    settings.mattermost.contents      # "generic"

``load_certificate_settings(host)`` reads only what certificate renewal needs
(deploys/certs.py): the ACME settings and the names of the managed certificates.

Checks that apply to all data, whatever the host does:
- a key that is not a setting (group_data/all.py, ``KNOWN_KEYS``) is refused with the closest
  known key, except pyinfra's own (``_sudo``...), connector data (``ssh_*``...), the lab's
  (``lab_*``) and the site's own keys listed in ``extra_data_keys``;
- a value starting with ``CHANGE-ME`` is a placeholder the site has not replaced: refused,
  with the rest of its text saying what to put there.

Credential files are read on the control node (paths outside the repo, or ``env:NAME`` for an
environment variable holding the content) and parsed as the push proxy would parse them
(mmpush.credentials); their content is kept out of ``repr`` and of every message.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from mmpush import credentials
from mmpush.acme import LETSENCRYPT_PRODUCTION

PUSH_MODES = ("eas", "hpns", "tpns", "off")
PUSH_CONTENTS = ("generic_no_channel", "generic", "full", "id_loaded")
LOG_LEVELS = ("DEBUG", "INFO", "ERROR")
APPLE_TYPES = ("apple", "apple_rn", "apple_rnbeta")
ANDROID_TYPES = ("android", "android_rn")
HPNS_REGIONS = {
    "global": "https://global.push.mattermost.com",
    "us": "https://us.push.mattermost.com",
    "eu": "https://eu.push.mattermost.com",
    "ap": "https://ap.push.mattermost.com",
    "legacy": "https://push.mattermost.com",
}
TPNS_URL = "https://push-test.mattermost.com"
PUSH_PROXY_RELEASE_URL = (
    "https://github.com/mattermost/mattermost-push-proxy/releases/download/"
    "v{version}/mattermost-push-proxy-linux-{arch}.tar.gz"
)
#: The placeholders push_proxy_url may contain.
RELEASE_URL_FIELDS = ("version", "arch")
#: ``uname -m`` -> the Go architecture name in release archive names.
RELEASE_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
#: The Mattermost server stops waiting for the push proxy after this many seconds.
MATTERMOST_PUSH_TIMEOUT_SEC = 30

#: Every setting, as documented in group_data/all.py (a unit test keeps the two in sync).
KNOWN_KEYS = frozenset(
    {
        # push mode
        "push_mode",
        # Mattermost servers
        "push_contents",
        "push_contents_force",
        "mattermost_config_path",
        "mattermost_service",
        "mattermost_log_level",
        "mattermost_accept_env_overrides",
        "mattermost_restart_batch",
        "mattermost_ping_url",
        "mattermost_config_source",
        "mattermost_local_socket",
        "mattermost_api_url",
        "mattermost_admin_token",
        "mattermost_api_ca_bundle",
        "mattermost_cluster",
        # EAS: the push proxy's public name and its front
        "push_name",
        "push_https_port",
        "push_front_extra_config",
        "push_front_allowed_networks",
        # EAS: the release
        "push_proxy_version",
        "push_proxy_url",
        "push_proxy_sha256",
        "push_proxy_archive",
        # EAS: the push proxy
        "push_proxy_listen_port",
        "push_proxy_throttle_per_sec",
        "push_proxy_throttle_memory_store_size",
        "push_proxy_send_timeout_sec",
        "push_proxy_retry_timeout_sec",
        "push_proxy_metrics",
        "push_proxy_metrics_allowed_networks",
        "push_proxy_log_format",
        "push_proxy_https_proxy",
        "push_proxy_no_proxy",
        # EAS: app credentials
        "push_proxy_apple",
        "push_proxy_android",
        # certificates
        "acme_directory_url",
        "acme_email",
        "acme_ca_bundle",
        "acme_account_key_file",
        "acme_renew_days",
        "tls_certificate_source",
        "acme_dns_server",
        "acme_dns_zone",
        "acme_dns_tsig_key_name",
        "acme_dns_tsig_algorithm",
        "acme_dns_tsig_secret",
        "acme_dns_propagation_timeout",
        "tls_certificate_file",
        "tls_certificate_key_file",
        "tls_certificate_chain_file",
        "tls_trust_anchors_file",
        # HPNS
        "hpns_region",
        "hpns_use_outbound_proxy",
        # HPNS: outbound proxy
        "outbound_proxy_name",
        "outbound_proxy_port",
        "outbound_proxy_upstream",
        "outbound_proxy_allowed_networks",
        "outbound_proxy_resolvers",
        "outbound_proxy_ca_bundle",
        "outbound_proxy_keepalive",
        # runbooks (deploys/runbooks/), usually given with --data
        "runbook_send_dm",
        "runbook_dm_sender_token",
        "runbook_dm_recipient",
        "runbook_dm_wait_sec",
        "runbook_debug_minutes",
        "runbook_collect",
        "runbook_support_dir",
        # the site's own data keys
        "extra_data_keys",
    }
)
#: The fields of one push_proxy_apple / push_proxy_android entry.
APPLE_ENTRY_KEYS = frozenset(
    {
        "type",
        "topic",
        "development",
        "auth_key_file",
        "auth_key_id",
        "team_id",
        "certificate_file",
        "certificate_password_file",
    }
)
ANDROID_ENTRY_KEYS = frozenset({"type", "service_account_file"})
#: Data that is not ours but may be in host data: pyinfra's connectors'.
CONNECTOR_PREFIXES = (
    "ssh_",
    "winrm_",
    "docker_",
    "local_",
    "chroot_",
    "vagrant_",
    "terraform_",
    "dockerssh_",
)
#: The lab inventory's own data (mmpush/lab/inventory.py).
LAB_PREFIX = "lab_"
#: A value starting with this is a placeholder the site must replace.
PLACEHOLDER = "CHANGE-ME"
#: NGINX blocks a snippet inside the TLS server block may not open.
NGINX_REFUSED_BLOCKS = ("http", "events", "stream", "mail", "server", "upstream")

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ANY_CASE_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.-]+)?$")
_APPLE_ID = re.compile(r"^[A-Z0-9]{10}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_UNIT_CHARS = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
_UNIT_SUFFIXES = (
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
)
_SENSITIVE_NAME = re.compile(r"pass|secret|token|private|credential", re.IGNORECASE)


class SettingsError(PyinfraError, ValueError):
    """A setting is invalid. The message names host, key, value and what is allowed.

    A PyinfraError, so the pyinfra CLI prints the message alone and stops before any
    operation runs on any host.

        SettingsError("push1", "push_https_port", 80, "not 80").args[0]
        == "host push1: push_https_port = 80 is invalid: not 80"
    """

    def __init__(
        self, host: str, key: str, value: object, allowed: str, problem: str = "is invalid"
    ) -> None:
        self.host, self.key, self.value, self.allowed = host, key, value, allowed
        super().__init__(f"host {host}: {key} = {value!r} {problem}: {allowed}")


@dataclass(frozen=True)
class Secret:
    """A credential's content, read on the control node. Never shown by ``repr``/``str``.

    ``source`` says where it came from (a path or ``env:NAME``) for messages.
    """

    source: str
    content: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


@dataclass(frozen=True)
class ApplePush:
    """One ``ApplePushSettings`` entry: a .p8 token key (key id + team id) or a certificate."""

    type: str
    topic: str
    development: bool
    auth_key: Secret | None = None
    auth_key_id: str = ""
    team_id: str = ""
    certificate: Secret | None = None
    certificate_password: Secret | None = None


@dataclass(frozen=True)
class AndroidPush:
    """One ``AndroidPushSettings`` entry: an FCM v1 service-account JSON."""

    type: str
    service_account: Secret


@dataclass(frozen=True)
class AcmeConfig:
    """Where certificates come from (Let's Encrypt production unless set)."""

    directory_url: str
    email: str | None
    ca_bundle: str | None
    account_key_file: Path
    #: Also renew when fewer than this many days are left (None: the CA's ARI window or a
    #: third of the lifetime, like certbot).
    renew_days: int | None = None
    #: How the certificate is had: "acme-http01", "acme-dns01" or "files".
    source: str = "acme-http01"
    dns: DnsChallengeConfig | None = None
    files: CertificateFiles | None = None


@dataclass(frozen=True)
class DnsChallengeConfig:
    """ACME DNS-01 through RFC 2136 dynamic updates signed with TSIG (internal names)."""

    server: str
    zone: str
    tsig_key_name: str
    tsig_algorithm: str
    tsig_secret: Secret
    propagation_timeout: int = 120


@dataclass(frozen=True)
class CertificateFiles:
    """A certificate a site brings from its own PKI, checked on the control node: the full
    chain as NGINX serves it (leaf first, root left out) and the key."""

    certificate_file: str
    fullchain: bytes = field(repr=False)
    key: Secret
    not_after: str


def release_arch(machine: str) -> str:
    """The Go architecture name of release archives for a host's ``uname -m``.

    release_arch("x86_64") == "amd64"; release_arch("aarch64") == "arm64"
    Any other architecture raises ValueError: the push proxy ships no release for it.
    """
    arch = RELEASE_ARCHES.get(machine.strip())
    if arch is None:
        raise ValueError(
            f"the push proxy publishes Linux releases for x86_64 (linux-amd64) and aarch64 "
            f"(linux-arm64) only; this host's architecture is {machine.strip()!r}"
        )
    return arch


@dataclass(frozen=True)
class PushProxyArtifact:
    """The push proxy release: a URL the host downloads, or a local archive uploaded to it
    (air-gapped sites). Either way pinned by sha256.

    ``url_template`` may hold ``{version}`` and ``{arch}``; ``url_for("arm64")`` fills them.
    """

    version: str
    sha256: str
    url_template: str | None
    archive: Path | None

    def url_for(self, arch: str) -> str:
        """The download URL for a Go architecture name (see :func:`release_arch`).

        artifact.url_for("arm64")
        == ".../v6.5.0/mattermost-push-proxy-linux-arm64.tar.gz"
        """
        if self.url_template is None:
            raise ValueError("this release is a local archive (push_proxy_archive), not a URL")
        if arch not in set(RELEASE_ARCHES.values()):
            raise ValueError(f"unknown release architecture {arch!r}: amd64 or arm64")
        return self.url_template.format(version=self.version, arch=arch)

    @property
    def url(self) -> str | None:
        """The amd64 download URL (None for a local archive); kept for callers that do not
        yet pass the host's architecture to :meth:`url_for`."""
        return None if self.url_template is None else self.url_for("amd64")


@dataclass(frozen=True)
class EasSettings:
    """The self-hosted push proxy (group ``push_proxies``) and its TLS front."""

    push_name: str
    https_port: int
    artifact: PushProxyArtifact
    listen_port: int
    throttle_per_sec: int
    throttle_memory_store_size: int
    send_timeout_sec: int
    retry_timeout_sec: int
    enable_metrics: bool
    log_format: str
    front_extra_config: str
    apple: tuple[ApplePush, ...]
    android: tuple[AndroidPush, ...]
    #: The egress proxy for APNs/FCM (``HTTPS_PROXY`` of the push proxy), or None.
    https_proxy: str | None = None
    #: Hosts reached without the egress proxy (``NO_PROXY``).
    no_proxy: tuple[str, ...] = ()
    #: Who may read ``/metrics`` (besides loopback); empty: loopback only.
    metrics_allowed_networks: tuple[str, ...] = ()
    #: Who may use the push front; empty: any client.
    front_allowed_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class MattermostSettings:
    """The push settings of Mattermost servers (group ``mattermost``)."""

    config_path: str
    service: str
    contents: str
    contents_force: bool
    log_level: str | None
    #: Deploy even when an MM_* environment variable overrides a push setting (warn only).
    accept_env_overrides: bool = False
    #: How many servers restart at once; each batch waits until its servers answer again.
    restart_batch: int = 1
    #: What answers once the server is up again after a restart (on the server itself).
    ping_url: str = "http://127.0.0.1:8065/api/v4/system/ping"
    #: Where the configuration lives: "auto" (detected from the running service), "file"
    #: (mattermost_config_path) or "database" (changed through the config API).
    config_source: str = "auto"
    #: The local-mode socket (ServiceSettings.LocalModeSocketLocation), tried first.
    local_socket: str = "/var/tmp/mattermost_local.socket"
    #: The config API over the network, with a system admin's personal access token.
    api_url: str | None = None
    admin_token: Secret | None = None
    api_ca_bundle: str | None = None
    #: Servers with the same name share one configuration (patched once, checked on all).
    cluster: str | None = None


@dataclass(frozen=True)
class OutboundProxySettings:
    """The outbound NGINX TLS proxy (group ``outbound_proxies``) mapped to Mattermost's
    hosted push service, for sites whose servers reach the internet only through it."""

    name: str
    port: int
    upstream_url: str
    allowed_networks: tuple[str, ...]
    resolvers: tuple[str, ...]
    ca_bundle: Secret | None
    keepalive: bool

    @property
    def url(self) -> str:
        """What Mattermost servers use: ``https://push.internal.example:8000``."""
        return f"https://{self.name}:{self.port}"

    @property
    def upstream_host(self) -> str:
        """The upstream's DNS name: ``push.mattermost.com``."""
        return self.upstream_url.removeprefix("https://").split("/")[0].split(":")[0]

    @property
    def upstream_port(self) -> int:
        """The upstream's port: 443 unless the URL names one."""
        authority = self.upstream_url.removeprefix("https://").split("/")[0]
        return int(authority.split(":")[1]) if ":" in authority else 443


@dataclass(frozen=True)
class Settings:
    """Everything a deploy needs for one host."""

    host: str
    groups: tuple[str, ...]
    push_mode: str
    mattermost: MattermostSettings
    eas: EasSettings | None
    acme: AcmeConfig
    hpns_region: str
    push_name: str | None
    push_https_port: int
    outbound: OutboundProxySettings | None = None
    #: The outbound proxy's URL when HPNS goes through it (from the inventory's
    #: outbound_proxies), else None: HPNS is reached directly.
    hpns_outbound_url: str | None = None
    #: Things that work today but need attention soon (e.g. an APNs certificate expiring
    #: within 30 days), each naming host and key; deploys log them.
    warnings: tuple[str, ...] = ()

    def in_group(self, group: str) -> bool:
        return group in self.groups

    @property
    def push_server_url(self) -> str | None:
        """What Mattermost servers get as ``PushNotificationServer`` in this mode."""
        if self.push_mode == "eas":
            port = "" if self.push_https_port == 443 else f":{self.push_https_port}"
            return f"https://{self.push_name}{port}"
        if self.push_mode == "hpns":
            return self.hpns_outbound_url or HPNS_REGIONS[self.hpns_region]
        if self.push_mode == "tpns":
            return TPNS_URL
        return None


@dataclass(frozen=True)
class RunbookSettings:
    """What the runbooks (deploys/runbooks/) need for one host, beyond its Mattermost
    settings."""

    host: str
    push_mode: str
    mattermost: MattermostSettings
    #: test_push.py: also do the guide's end-to-end DM (B sends A a DM; A's device gets it).
    send_dm: bool = False
    #: Account B's personal access token (a file on the control node, or env:NAME).
    dm_sender_token: Secret | None = None
    #: Account A's username (its device is logged in to the app).
    dm_recipient: str | None = None
    #: How long the end-to-end DM waits for the server to log the push.
    dm_wait_sec: int = 30
    #: push_debug.py: minutes until the host itself lowers the log levels again.
    debug_minutes: int = 30
    #: push_debug.py: also collect a support bundle on the control node.
    collect: bool = False
    #: Where support bundles go on the control node (support/<host>-<time>/ below it).
    support_dir: str = "support"


@dataclass(frozen=True)
class CertificateSettings:
    """What certificate renewal (deploys/certs.py) needs for one host, and nothing else."""

    host: str
    acme: AcmeConfig
    #: The TLS names whose certificates this project manages on the host.
    names: tuple[str, ...]
    #: e.g. certificate files expiring within 30 days, naming the file.
    warnings: tuple[str, ...] = ()


# --- readers: one per kind of value, each raising SettingsError ---------------------------


class _Reader:
    """Reads and checks host data values, naming ``host`` in every error; collects warnings."""

    def __init__(
        self, host: str, data: Mapping[str, Any], warnings: list[str] | None = None
    ) -> None:
        self.host = host
        self.data = data
        self.warnings: list[str] = [] if warnings is None else warnings

    def sub(self, data: Mapping[str, Any]) -> _Reader:
        """A reader of other data (an app entry) for the same host, sharing the warnings."""
        return _Reader(self.host, data, self.warnings)

    def error(self, key: str, value: object, allowed: str) -> SettingsError:
        return SettingsError(self.host, key, value, allowed)

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key, default)
        return default if value is None else value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.raw(key, default)
        if value not in choices:
            raise self.error(key, value, f"one of {', '.join(choices)}")
        return str(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, value, "true or false (a Python bool)")
        return value

    def integer(self, key: str, default: int, low: int, high: int, why: str = "") -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, value, f"a whole number from {low} to {high}{why}")
        return value

    def port(self, key: str, default: int, low: int = 1, why: str = "") -> int:
        """A TCP port; never 80, where NGINX serves ACME challenges and the redirect."""
        value = self.integer(key, default, low, 65535, why)
        if value == 80:
            raise self.error(
                key, value, "a port other than 80 (NGINX serves ACME HTTP-01 challenges there)"
            )
        return value

    def dns_name_or_label(self, key: str) -> str:
        """A TSIG key name: one label (``acme-update``) or a DNS name (``acme.example.``)."""
        value = self.raw(key)
        name = value.rstrip(".") if isinstance(value, str) else value
        if not isinstance(name, str) or not all(
            _ANY_CASE_LABEL.fullmatch(label) for label in name.split(".")
        ):
            raise self.error(key, value, "a DNS name or label, e.g. acme-update")
        return name

    def dns_name(self, key: str, default: str | None = None) -> str:
        value = self.raw(key, default)
        if not is_dns_name(value):
            raise self.error(
                key,
                value,
                "a fully qualified DNS name in lowercase, e.g. push.example.com (no scheme, port)",
            )
        return str(value)

    def text(
        self,
        key: str,
        default: str = "",
        pattern: re.Pattern[str] | None = None,
        allowed: str = "text",
    ) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise self.error(key, value, allowed)
        return value

    def https_url(self, key: str, default: str | None = None) -> str:
        value = self.raw(key, default)
        if (
            not isinstance(value, str)
            or not value.startswith("https://")
            or len(value) <= len("https://")
            or any(c.isspace() for c in value)
        ):
            raise self.error(key, value, "an https:// URL (no whitespace)")
        return value

    def string_list(self, key: str, example: str) -> list[str]:
        """A list of strings (``[]`` when unset); a lone string is refused."""
        values = self.raw(key, [])
        if isinstance(values, str) or not isinstance(values, list | tuple):
            raise self.error(key, values, f"a list, e.g. {example}")
        for value in values:
            if not isinstance(value, str):
                raise self.error(key, value, f"a list of strings, e.g. {example}")
        return list(values)

    def local_file(self, key: str, value: object) -> Path:
        if not isinstance(value, str | os.PathLike) or not value:
            raise self.error(key, _shown(key, value), "a path to a file on the control node")
        if _looks_like_content(str(value)):
            raise self.error(
                key,
                "<hidden: a file's content, not a path>",
                "a path to a file on the control node (save the content to a file, mode 0600, "
                "and give its path)",
            )
        path = Path(value).expanduser()
        try:
            found = path.is_file()
        except OSError:  # e.g. ENAMETOOLONG
            found = False
        if not found:
            raise self.error(key, str(value), "an existing file on the control node (not found)")
        return path

    def secret(self, key: str, value: object) -> Secret:
        """A credential from a file on the control node, or ``env:NAME``."""
        if isinstance(value, str) and value.startswith("env:"):
            name = value[4:]
            content = os.environ.get(name)
            if not content:
                raise self.error(key, value, f"the environment variable {name} to be set")
            return Secret(value, content.encode())
        path = self.local_file(key, value)
        return Secret(str(path), path.read_bytes())


def is_dns_name(value: object) -> bool:
    """True for a fully qualified DNS host name: ``is_dns_name("push.example.com")``."""
    if not isinstance(value, str) or len(value) > 253 or "." not in value:
        return False
    try:
        ipaddress.ip_address(value)
        return False
    except ValueError:
        pass
    return all(_DNS_LABEL.fullmatch(label) for label in value.split("."))


def _is_host_name(value: str) -> bool:
    """A host name in any case, one label or more (``proxy``, ``Proxy.corp.example``)."""
    if not value or len(value) > 253 or _is_ip(value):
        return False
    return all(_ANY_CASE_LABEL.fullmatch(label) for label in value.split("."))


def _is_ip(value: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return version is None or address.version == version


def _port_number(text: str) -> int | None:
    """``"53"`` -> 53; None unless ASCII digits from 1 to 65535 (``"5_3"``, ``" 53"``: None)."""
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        return None
    return int(text)


def _split_host_port(text: str) -> tuple[str, str | None]:
    """``"[2001:db8::1]:53"`` -> ``("2001:db8::1", "53")``; ``"a.example"`` -> ``(.., None)``.
    An IPv6 address without brackets comes back whole, with no port."""
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\[\]]*)\](?::(.*))?", text)
        if not match:
            return text, None
        return match.group(1), match.group(2)
    if text.count(":") > 1:
        return text, None
    host, colon, port = text.partition(":")
    return host, port if colon else None


def release_url_problem(template: str) -> str | None:
    """Why ``template`` is not a usable push_proxy_url, or None.

    release_url_problem("https://x.example/v{version}/{foo}.tgz")
    == "unknown placeholder {foo}: only {version} and {arch}"
    """
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as error:
        return f"unbalanced braces ({error}); only {{version}} and {{arch}} are filled in"
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in RELEASE_URL_FIELDS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            return f"unknown placeholder {shown}: only {{version}} and {{arch}}"
    return None


# --- NGINX snippets -----------------------------------------------------------------------------


class _SnippetError(ValueError):
    """A snippet NGINX would misread or that would leave its block."""


def _nginx_statements(text: str) -> Iterator[tuple[str, list[str], int]]:
    """The statements of an NGINX config snippet, as ``(end, words, line)`` with ``end`` one of
    ``";"``, ``"{"``, ``"}"``. Tokenized as NGINX's ``ngx_conf_read_token`` does
    (src/core/ngx_conf_file.c): ``#`` comments at a word's start, '...' and "..." quotes,
    backslash escapes, ``${`` inside variables; ``{``/``;`` end a word, ``}`` only closes a
    block where a new statement would start. Raises _SnippetError where NGINX would fail."""
    words: list[str] = []
    word: list[str] = []
    line = 1
    last_space, need_space, comment, escaped, variable = True, False, False, False, False
    quote = ""
    for ch in text:
        if ch == "\n":
            line += 1
        if comment:
            comment = ch != "\n"
            continue
        if escaped:
            escaped = False
            word.append(ch)
            continue
        if need_space:
            need_space = False
            last_space = True
            if ch in " \t\r\n":
                continue
            if ch in ";{":
                yield ch, words, line
                words = []
                continue
            if ch != ")":  # NGINX lets ")" follow a quoted string, as a word of its own
                raise _SnippetError(f"line {line}: unexpected {ch!r} right after a quoted string")
        if last_space:
            if ch in " \t\r\n":
                continue
            if ch in ";{":
                if not words:
                    raise _SnippetError(f"line {line}: unexpected {ch!r} (no directive before it)")
                yield ch, words, line
                words = []
                continue
            if ch == "}":
                if words:
                    raise _SnippetError(
                        f"line {line}: unexpected '}}' (the directive {words[0]!r} before it "
                        "needs a ';')"
                    )
                yield ch, [], line
                continue
            if ch == "#":
                comment = True
                continue
            last_space = False
            if ch in "\"'":
                quote = ch
                word = []
                continue
            word = [ch]
            escaped, variable = ch == "\\", ch == "$"
            continue
        if ch == "{" and variable:
            word.append(ch)
            continue
        variable = False
        if ch == "\\":
            escaped = True
            word.append(ch)
            continue
        if ch == "$":
            variable = True
            word.append(ch)
            continue
        if quote:
            if ch == quote:
                quote, need_space = "", True
                words.append("".join(word))
            else:
                word.append(ch)
            continue
        if ch in " \t\r\n;{":
            words.append("".join(word))
            last_space = True
            if ch in ";{":
                yield ch, words, line
                words = []
            continue
        word.append(ch)
    if quote:
        raise _SnippetError(f"a {quote} quote is never closed")
    if escaped:
        raise _SnippetError("the snippet ends with a backslash")
    if words or not last_space:
        raise _SnippetError(
            f"line {line}: the last directive is not terminated by ';' (it would swallow the "
            "template's next line)"
        )


def nginx_snippet_problem(text: str) -> str | None:
    """Why ``text`` cannot go inside the push front's TLS ``server { }`` block, or None.

    nginx_snippet_problem("access_log off;") is None
    nginx_snippet_problem("} server {") == "line 1: '}' would close the server block ..."
    Balanced blocks such as ``location /x { ... }`` are fine; ``server``, ``http``,
    ``events``, ``stream``, ``mail`` and ``upstream`` blocks are not.
    """
    open_blocks: list[tuple[str, int]] = []
    try:
        for end, words, line in _nginx_statements(text):
            if end == "{":
                name = words[0].lower()
                if name in NGINX_REFUSED_BLOCKS:
                    return (
                        f"line {line}: a {name!r} block; the snippet goes inside the push "
                        "front's server block (use location/if blocks and directives)"
                    )
                open_blocks.append((words[0], line))
            elif end == "}":
                if not open_blocks:
                    return f"line {line}: '}}' would close the server block (braces must balance)"
                open_blocks.pop()
    except _SnippetError as error:
        return str(error)
    if open_blocks:
        name, line = open_blocks[-1]
        return f"line {line}: the {name!r} block is never closed (braces must balance)"
    return None


# --- data-wide checks: unknown keys, placeholders ---------------------------------------------


def _shown(key: str, value: object) -> object:
    """A value fit for a message: hidden when the key's name suggests a secret, or when the
    value (or anything inside it) looks like a file's content rather than a setting."""
    if _SENSITIVE_NAME.search(key) or _looks_like_content(repr(value)):
        return "<hidden>"
    return value


def _looks_like_content(text: str) -> bool:
    """True for text that is a file's content (a PEM block, a JSON key file, several lines, or
    longer than any path): ``_looks_like_content("-----BEGIN PRIVATE KEY-----...")``."""
    return (
        "-----BEGIN" in text
        or '"private_key"' in text
        or text.lstrip().startswith("{")
        or "\n" in text
        or "\\n" in text
        or len(text) > 1024
    )


def _unknown(key: str, known: frozenset[str]) -> str:
    """'unknown setting; did you mean push_contents?' (difflib's closest match)."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"unknown setting; did you mean {close[0]}?"
    return (
        "unknown setting (the settings are documented in group_data/all.py; list a site's "
        "own data keys in extra_data_keys)"
    )


def _extra_data_keys(read: _Reader) -> frozenset[str]:
    names = read.string_list("extra_data_keys", "['site_owner']")
    for name in names:
        if not name.isidentifier():
            raise read.error("extra_data_keys", name, "data key names (Python identifiers)")
    return frozenset(names)


def _refuse_unknown_keys(read: _Reader) -> None:
    """Every key of the data is a setting, connector/pyinfra/lab data or a declared extra."""
    extra = _extra_data_keys(read)
    for key, value in read.data.items():
        allowed = (
            key in KNOWN_KEYS
            or key in extra
            or key.startswith(("_", LAB_PREFIX, *CONNECTOR_PREFIXES))
        )
        if not allowed:
            raise read.error(key, _shown(key, value), _unknown(key, KNOWN_KEYS))
    for list_key, known in (
        ("push_proxy_apple", APPLE_ENTRY_KEYS),
        ("push_proxy_android", ANDROID_ENTRY_KEYS),
    ):
        entries = read.data.get(list_key)
        if not isinstance(entries, list | tuple):
            continue
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                continue
            for name, value in entry.items():
                if name not in known:
                    key = f"{list_key}[{index}].{name}"
                    raise read.error(key, _shown(str(name), value), _unknown(str(name), known))


def _placeholders(key: str, value: object) -> Iterator[tuple[str, str]]:
    """(key, text) of every string starting with CHANGE-ME in a value, lists and dicts
    included: ``push_proxy_apple[0].topic``."""
    if isinstance(value, str):
        if value.startswith(PLACEHOLDER):
            yield key, value
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _placeholders(f"{key}.{name}", item)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _placeholders(f"{key}[{index}]", item)


def placeholders(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (setting, what goes there) still holding a ``CHANGE-ME`` placeholder in a host's
    data: ``[("push_name", "the push proxy's public DNS name")]``."""
    found = []
    for top in sorted(data):
        if top in KNOWN_KEYS:
            for key, text in _placeholders(top, data[top]):
                found.append((key, text[len(PLACEHOLDER) :].lstrip(" :-")))
    return found


def _refuse_placeholders(read: _Reader) -> None:
    """A setting still holding a ``CHANGE-ME...`` placeholder stops the run, saying what goes
    there: ``push_name = "CHANGE-ME: the push proxy's public DNS name"``."""
    for top in read.data:
        if top not in KNOWN_KEYS:
            continue
        for key, text in _placeholders(top, read.data[top]):
            hint = text[len(PLACEHOLDER) :].lstrip(" :-") or "replace it with the site's value"
            raise SettingsError(read.host, key, text, hint, problem="is a placeholder")


def _check_data(read: _Reader) -> None:
    _refuse_unknown_keys(read)
    _refuse_placeholders(read)


# --- sections ------------------------------------------------------------------------------


def _unique_type(read: _Reader, key: str, kind: str, seen: list[str]) -> None:
    """One entry per app type: the proxy keys its clients (and we its credentials) by type."""
    if kind in seen:
        raise read.error(f"{key}.type", kind, "one entry per app type (this type is listed twice)")


def _apple_token(read: _Reader, key: str, kind: str, topic: str, dev: bool) -> ApplePush:
    entry_key = f"{key}.auth_key_file"
    secret = read.secret(entry_key, read.data[entry_key])
    try:
        credentials.check_apns_auth_key(secret.content, secret.source)
    except credentials.CredentialError as error:
        raise read.error(entry_key, secret.source, f"app type {kind}: {error}") from None
    return ApplePush(
        kind,
        topic,
        dev,
        auth_key=secret,
        auth_key_id=read.text(
            f"{key}.auth_key_id", pattern=_APPLE_ID, allowed="Apple's 10-character key id"
        ),
        team_id=read.text(
            f"{key}.team_id", pattern=_APPLE_ID, allowed="Apple's 10-character team id"
        ),
    )


def _apple_certificate(read: _Reader, key: str, kind: str, topic: str, dev: bool) -> ApplePush:
    certificate = read.secret(f"{key}.certificate_file", read.data[f"{key}.certificate_file"])
    password_value = read.raw(f"{key}.certificate_password_file")
    password = (
        read.secret(f"{key}.certificate_password_file", password_value) if password_value else None
    )
    try:
        text = credentials.certificate_password(password.content) if password else ""
        info = credentials.check_apns_certificate(
            certificate.content, text, topic, datetime.now(UTC), certificate.source
        )
    except credentials.CredentialError as error:
        value: object = certificate.source
        if error.field == "certificate_password_file":
            value = password.source if password else None
        elif error.field == "topic":
            value = topic
        raise read.error(
            f"{key}.{error.field or 'certificate_file'}", value, f"app type {kind}: {error}"
        ) from None
    for warning in info.warnings:
        read.warnings.append(
            f"host {read.host}: {key}.certificate_file ({certificate.source}, app type {kind}): "
            f"{warning}"
        )
    return ApplePush(kind, topic, dev, certificate=certificate, certificate_password=password)


def _apple_entries(read: _Reader) -> tuple[ApplePush, ...]:
    entries = read.raw("push_proxy_apple", [])
    if not isinstance(entries, list | tuple):
        raise read.error("push_proxy_apple", entries, "a list of dicts (see group_data/all.py)")
    apple: list[ApplePush] = []
    for index, entry in enumerate(entries):
        key = f"push_proxy_apple[{index}]"
        if not isinstance(entry, Mapping):
            raise read.error(key, entry, "a dict with type, topic and credentials")
        sub = read.sub({f"{key}.{k}": v for k, v in entry.items()})
        kind = sub.choice(f"{key}.type", APPLE_TYPES)
        _unique_type(read, key, kind, [a.type for a in apple])
        if entry.get("auth_key_file") and entry.get("certificate_file"):
            raise read.error(
                key, sorted(entry), "either auth_key_file (token) or certificate_file, not both"
            )
        topic = sub.text(
            f"{key}.topic",
            pattern=re.compile(r"^[A-Za-z0-9.-]+$"),
            allowed="the app's bundle id, e.g. com.example.mattermost",
        )
        development = sub.boolean(f"{key}.development", False)
        if entry.get("auth_key_file"):
            apple.append(_apple_token(sub, key, kind, topic, development))
        elif entry.get("certificate_file"):
            apple.append(_apple_certificate(sub, key, kind, topic, development))
        else:
            raise read.error(
                key,
                {k: "..." for k in entry},
                "auth_key_file (+ auth_key_id, team_id) or certificate_file",
            )
    return tuple(apple)


def _android_entries(read: _Reader) -> tuple[AndroidPush, ...]:
    entries = read.raw("push_proxy_android", [])
    if not isinstance(entries, list | tuple):
        raise read.error("push_proxy_android", entries, "a list of dicts (see group_data/all.py)")
    android: list[AndroidPush] = []
    for index, entry in enumerate(entries):
        key = f"push_proxy_android[{index}]"
        if not isinstance(entry, Mapping):
            raise read.error(key, entry, "a dict with type and service_account_file")
        sub = read.sub({f"{key}.{k}": v for k, v in entry.items()})
        kind = sub.choice(f"{key}.type", ANDROID_TYPES)
        _unique_type(read, key, kind, [a.type for a in android])
        secret = sub.secret(f"{key}.service_account_file", entry.get("service_account_file"))
        try:
            credentials.check_fcm_service_account(secret.content)
        except credentials.CredentialError as error:
            raise sub.error(
                f"{key}.service_account_file", secret.source, f"app type {kind}: {error}"
            ) from None
        android.append(AndroidPush(kind, secret))
    return tuple(android)


def _artifact(read: _Reader) -> PushProxyArtifact:
    version = read.text(
        "push_proxy_version", pattern=_VERSION, allowed="a release version, e.g. 6.5.0"
    )
    sha256 = read.text(
        "push_proxy_sha256",
        pattern=_SHA256,
        allowed="the release archive's sha256: 64 lowercase hex characters",
    )
    archive_value = read.raw("push_proxy_archive")
    if archive_value:
        archive = read.local_file("push_proxy_archive", archive_value)
        actual = hashlib.sha256(archive.read_bytes()).hexdigest()
        if actual != sha256:
            raise read.error(
                "push_proxy_sha256", sha256, f"the sha256 of {archive} (which is {actual})"
            )
        return PushProxyArtifact(version, sha256, None, archive)
    template = read.https_url("push_proxy_url", PUSH_PROXY_RELEASE_URL)
    problem = release_url_problem(template)
    if problem:
        raise read.error("push_proxy_url", template, problem)
    return PushProxyArtifact(version, sha256, template, None)


def _https_port(read: _Reader) -> int:
    return read.port("push_https_port", 443)


def _listen_port(read: _Reader, https_port: int) -> int:
    """The push proxy's loopback port: unprivileged (it runs as its own user) and not a port
    NGINX listens on."""
    port = read.port(
        "push_proxy_listen_port", 8066, 1024, " (unprivileged: the proxy runs as its own user)"
    )
    if port == https_port:
        raise read.error(
            "push_proxy_listen_port",
            port,
            f"a port other than push_https_port ({https_port}) and 80: NGINX listens there",
        )
    return port


def _timeouts(read: _Reader) -> tuple[int, int]:
    """(send, retry) seconds. The push proxy spends at most the send timeout on a push, each
    attempt at most the retry timeout (server/apple_notification_server.go,
    server/config_push_proxy.go), and must answer before Mattermost stops waiting."""
    send = read.integer(
        "push_proxy_send_timeout_sec",
        25,
        1,
        MATTERMOST_PUSH_TIMEOUT_SEC - 1,
        f" (the Mattermost server stops waiting after {MATTERMOST_PUSH_TIMEOUT_SEC} s)",
    )
    retry = read.integer("push_proxy_retry_timeout_sec", 8, 1, 2**31 - 1)
    if retry > send:
        raise read.error(
            "push_proxy_retry_timeout_sec",
            retry,
            f"a whole number from 1 to push_proxy_send_timeout_sec ({send}): one attempt "
            "cannot outlast the whole send",
        )
    return send, retry


def _front_extra_config(read: _Reader) -> str:
    text = read.text(
        "push_front_extra_config", "", allowed="NGINX directives for the TLS server block (text)"
    )
    problem = nginx_snippet_problem(text)
    if problem:
        raise read.error(
            "push_front_extra_config",
            text,
            f"NGINX directives for inside the TLS server block: {problem}",
        )
    return text


def _proxy_url(read: _Reader, key: str) -> str | None:
    """An egress proxy URL ``http(s)://host[:port]`` (no path, no credentials), or None."""
    value = read.raw(key)
    if value is None:
        return None
    allowed = "None or http://host[:port] / https://host[:port] (no path, no user:password@)"
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise read.error(key, value, allowed)
    match = re.fullmatch(r"(https?)://([^/?#@]+)/?", value)
    if not match:
        raise read.error(key, value, allowed)
    host, port = _split_host_port(match.group(2))
    host_ok = (
        _is_host_name(host)
        or _is_ip(host, 4)
        or (_is_ip(host, 6) and match.group(2).startswith("["))
    )
    if not host_ok or (port is not None and _port_number(port) is None):
        raise read.error(key, value, allowed)
    return value.rstrip("/")


def _no_proxy_entry(text: str) -> bool:
    """A NO_PROXY entry: a host or domain (``.example.com``, ``*.example.com``), an IP or a
    CIDR, a name or address optionally with ``:port``."""
    if "/" in text:
        try:
            ipaddress.ip_network(text, strict=False)
            return True
        except ValueError:
            return False
    host, port = _split_host_port(text)
    if port is not None and _port_number(port) is None:
        return False
    if _is_ip(host):
        return True
    domain = host.removeprefix("*.") if host.startswith("*.") else host.removeprefix(".")
    return _is_host_name(domain)


def _no_proxy(read: _Reader) -> tuple[str, ...]:
    example = "['10.0.0.0/8', '.internal.example', 'localhost']"
    entries = read.string_list("push_proxy_no_proxy", example)
    for entry in entries:
        if not _no_proxy_entry(entry):
            raise read.error(
                "push_proxy_no_proxy",
                entry,
                f"a host name, .domain, IP address or CIDR ({example})",
            )
    return tuple(entries)


def _eas(read: _Reader) -> EasSettings:
    https_port = _https_port(read)
    send_timeout, retry_timeout = _timeouts(read)
    return EasSettings(
        push_name=read.dns_name("push_name"),
        https_port=https_port,
        artifact=_artifact(read),
        listen_port=_listen_port(read, https_port),
        throttle_per_sec=read.integer("push_proxy_throttle_per_sec", 300, 1, 1_000_000),
        throttle_memory_store_size=read.integer(
            "push_proxy_throttle_memory_store_size", 50000, 1, 100_000_000
        ),
        send_timeout_sec=send_timeout,
        retry_timeout_sec=retry_timeout,
        enable_metrics=read.boolean("push_proxy_metrics", False),
        log_format=read.choice("push_proxy_log_format", ("plain", "json"), "plain"),
        front_extra_config=_front_extra_config(read),
        apple=_apple_entries(read),
        android=_android_entries(read),
        https_proxy=_proxy_url(read, "push_proxy_https_proxy"),
        no_proxy=_no_proxy(read),
        metrics_allowed_networks=_networks(read, "push_proxy_metrics_allowed_networks"),
        front_allowed_networks=_networks(read, "push_front_allowed_networks"),
    )


def _acme(read: _Reader) -> AcmeConfig:
    directory = read.https_url("acme_directory_url", LETSENCRYPT_PRODUCTION)
    email = read.raw("acme_email")
    if email is not None and (not isinstance(email, str) or not _EMAIL.fullmatch(email)):
        raise read.error("acme_email", email, "an email address for the ACME account, or None")
    bundle = read.raw("acme_ca_bundle")
    ca_bundle = str(read.local_file("acme_ca_bundle", bundle)) if bundle else None
    default_key = Path("~/.config/mmpush/acme").expanduser() / (
        hashlib.sha256(directory.encode()).hexdigest()[:12] + "-account.pem"
    )
    key_file = Path(str(read.raw("acme_account_key_file", default_key))).expanduser()
    renew_days = None
    if read.raw("acme_renew_days") is not None:
        renew_days = read.integer("acme_renew_days", 30, 1, 365)
    source = read.choice(
        "tls_certificate_source", ("acme-http01", "acme-dns01", "files"), "acme-http01"
    )
    dns = _dns_challenge(read) if source == "acme-dns01" else None
    return AcmeConfig(directory, email, ca_bundle, key_file, renew_days, source, dns)


TSIG_ALGORITHMS = (
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "hmac-sha224",
    "hmac-sha1",
    "hmac-md5",
)


def _dns_challenge(read: _Reader) -> DnsChallengeConfig:
    server = read.raw("acme_dns_server")
    host_part, port_part = _split_host_port(str(server)) if isinstance(server, str) else ("", None)
    if (
        not isinstance(server, str)
        or not (_is_ip(host_part) or _is_host_name(host_part))
        or (port_part is not None and _port_number(port_part) is None)
    ):
        raise read.error(
            "acme_dns_server",
            server,
            "the DNS server that takes the zone's dynamic updates (its primary): a name or an "
            "address, optionally with :port, e.g. ns1.example.com or [2001:db8::53]:53",
        )
    secret_value = read.raw("acme_dns_tsig_secret")
    if not secret_value:
        raise read.error(
            "acme_dns_tsig_secret",
            secret_value,
            "the TSIG key's secret (base64, as tsig-keygen prints it): a file on the control "
            "node or env:NAME",
        )
    return DnsChallengeConfig(
        server=server,
        zone=read.dns_name("acme_dns_zone"),
        tsig_key_name=read.dns_name_or_label("acme_dns_tsig_key_name"),
        tsig_algorithm=read.choice("acme_dns_tsig_algorithm", TSIG_ALGORITHMS, "hmac-sha256"),
        tsig_secret=read.secret("acme_dns_tsig_secret", secret_value),
        propagation_timeout=read.integer("acme_dns_propagation_timeout", 120, 5, 3600),
    )


def is_unit_name(value: object) -> bool:
    """A systemd service name as ``systemctl restart`` takes it: ``mattermost``,
    ``mattermost.service``, ``mattermost@blue``; never an option (``--help``) or another unit
    type (``mattermost.socket``)."""
    if not isinstance(value, str) or not 0 < len(value) <= 256 or value.startswith("-"):
        return False
    if not _UNIT_CHARS.fullmatch(value):
        return False
    stem = value.removesuffix(".service")
    if not stem or stem.rpartition(".")[2] in _UNIT_SUFFIXES:
        return False
    prefix, at, instance = stem.partition("@")
    return bool(prefix) and (not at or (bool(instance) and "@" not in instance))


def _mattermost(read: _Reader, push_mode: str) -> MattermostSettings:
    contents = read.choice("push_contents", PUSH_CONTENTS, "generic")
    force = read.boolean("push_contents_force", False)
    level = read.raw("mattermost_log_level")
    if level is not None:
        level = read.choice("mattermost_log_level", LOG_LEVELS)
    service = read.raw("mattermost_service", "mattermost")
    if not is_unit_name(service):
        raise read.error(
            "mattermost_service",
            service,
            "a systemd service name (letters, digits, :_.\\@-, not starting with '-', "
            "optionally ending in .service, at most 256 characters), e.g. mattermost",
        )
    return MattermostSettings(
        config_path=read.text(
            "mattermost_config_path",
            "/opt/mattermost/config/config.json",
            re.compile(r"^/\S+\.json$"),
            "an absolute path to config.json",
        ),
        service=service,
        contents=contents,
        contents_force=force,
        log_level=level,
        accept_env_overrides=read.boolean("mattermost_accept_env_overrides", False),
        restart_batch=read.integer("mattermost_restart_batch", 1, 1, 1000),
        ping_url=_ping_url(read),
        config_source=read.choice(
            "mattermost_config_source", ("auto", "file", "database"), "auto"
        ),
        local_socket=read.text(
            "mattermost_local_socket",
            "/var/tmp/mattermost_local.socket",
            re.compile(r"^/[^\s'\"`$\\]+$"),
            "an absolute path (ServiceSettings.LocalModeSocketLocation)",
        ),
        api_url=_api_url(read),
        admin_token=(
            read.secret("mattermost_admin_token", read.raw("mattermost_admin_token"))
            if read.raw("mattermost_admin_token")
            else None
        ),
        api_ca_bundle=(
            str(read.local_file("mattermost_api_ca_bundle", read.raw("mattermost_api_ca_bundle")))
            if read.raw("mattermost_api_ca_bundle")
            else None
        ),
        cluster=read.text(
            "mattermost_cluster",
            "",
            re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$|^$"),
            "a cluster name (letters, digits, _.-) shared by the servers of one cluster",
        )
        or None,
    )


def _api_url(read: _Reader) -> str | None:
    value = read.raw("mattermost_api_url")
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value.startswith(("https://", "http://"))
        or any(c.isspace() for c in value)
        or not value.split("://", 1)[1].split("/")[0]
    ):
        raise read.error(
            "mattermost_api_url",
            value,
            "the server's URL for the config API, e.g. https://mattermost.example.com "
            "(https: the admin token goes with every call)",
        )
    return value.rstrip("/")


def _ping_url(read: _Reader) -> str:
    value = read.raw("mattermost_ping_url", "http://127.0.0.1:8065/api/v4/system/ping")
    if (
        not isinstance(value, str)
        or not value.startswith(("http://", "https://"))
        or any(c.isspace() or c in "'\"\\`$" for c in value)
    ):
        raise read.error(
            "mattermost_ping_url",
            value,
            "an http:// or https:// URL the server answers on itself once it is up, e.g. "
            "http://127.0.0.1:8065/api/v4/system/ping",
        )
    return value


def _networks(read: _Reader, key: str) -> tuple[str, ...]:
    values = read.raw(key, [])
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise read.error(key, values, "a list of networks, e.g. ['10.0.0.0/8', '192.0.2.10']")
    networks = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(str(value), strict=False)))
        except ValueError as error:
            raise read.error(key, value, f"an IP network such as 10.0.0.0/8 ({error})") from None
    return tuple(networks)


def resolver_problem(text: object) -> str | None:
    """Why ``text`` is not an NGINX resolver address, or None: ``IPv4``, ``IPv4:port``,
    ``[IPv6]`` or ``[IPv6]:port``, the port from 1 to 65535.

    resolver_problem("2001:db8::53") == "write an IPv6 address in brackets: [2001:db8::53]"
    """
    allowed = "an IP address: 192.0.2.53, 192.0.2.53:5353, [2001:db8::53] or [2001:db8::53]:53"
    if not isinstance(text, str):
        return allowed
    if _is_ip(text, 6):
        return f"write an IPv6 address in brackets: [{text}]"
    host, port = _split_host_port(text)
    bracketed = text.startswith("[")
    if not _is_ip(host, 6 if bracketed else 4):
        return allowed
    if port is not None and _port_number(port) is None:
        return f"{allowed}; the port is a number from 1 to 65535"
    return None


def _resolvers(read: _Reader, key: str) -> tuple[str, ...]:
    values = read.raw(key, [])
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise read.error(key, values, "a list of DNS servers, e.g. ['192.0.2.53', '10.0.0.2:53']")
    for value in values:
        problem = resolver_problem(value)
        if problem:
            raise read.error(key, value, problem)
    return tuple(values)


def _upstream(read: _Reader, default: str) -> str:
    """``https://<DNS name>[:port]``: no path, a port from 1 to 65535."""
    value = read.https_url("outbound_proxy_upstream", default)
    authority, _, path = value.removeprefix("https://").partition("/")
    host, colon, port = authority.partition(":")
    if path or not is_dns_name(host) or (colon and _port_number(port) is None):
        raise read.error(
            "outbound_proxy_upstream",
            value,
            "https://<DNS name>[:port] with no path, the port from 1 to 65535",
        )
    return f"https://{authority}"


def _ca_bundle(read: _Reader, key: str) -> Secret | None:
    value = read.raw(key)
    if not value:
        return None
    secret = read.secret(key, value)
    try:
        credentials.check_ca_bundle(secret.content)
    except credentials.CredentialError as error:
        raise read.error(key, secret.source, str(error)) from None
    return secret


def _outbound(read: _Reader, hpns_region: str) -> OutboundProxySettings:
    return OutboundProxySettings(
        name=read.dns_name("outbound_proxy_name"),
        port=read.port("outbound_proxy_port", 8000),
        upstream_url=_upstream(read, HPNS_REGIONS[hpns_region]),
        allowed_networks=_networks(read, "outbound_proxy_allowed_networks"),
        resolvers=_resolvers(read, "outbound_proxy_resolvers"),
        ca_bundle=_ca_bundle(read, "outbound_proxy_ca_bundle"),
        keepalive=read.boolean("outbound_proxy_keepalive", False),
    )


def _check_contents_for_mode(read: _Reader, mode: str, contents: MattermostSettings) -> None:
    if (
        mode == "tpns"
        and contents.contents in ("full", "id_loaded")
        and not (contents.contents_force)
    ):
        raise read.error(
            "push_contents",
            contents.contents,
            "generic or generic_no_channel with TPNS: the test service does not encrypt "
            "notifications, so message text would cross the internet readable "
            "(set push_contents_force = True to accept that)",
        )


def settings_from_data(
    name: str,
    groups: tuple[str, ...],
    data: Mapping[str, Any],
    outbound_proxies: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Validate one host's data (pure: no pyinfra state needed, so unit tests call it).

    settings_from_data("push1", ("push_proxies",), {"push_mode": "eas", ...})
    """
    read = _Reader(name, data)
    _check_data(read)
    push_mode = read.choice("push_mode", PUSH_MODES)
    uses_push_name = push_mode == "eas" and {"mattermost", "push_proxies"} & set(groups)
    eas = _eas(read) if push_mode == "eas" and "push_proxies" in groups else None
    mattermost = _mattermost(read, push_mode)
    _check_contents_for_mode(read, push_mode, mattermost)
    hpns_region = read.choice("hpns_region", tuple(HPNS_REGIONS), "global")
    outbound = None
    if push_mode == "hpns" and "outbound_proxies" in groups:
        outbound = _outbound(read, hpns_region)
    names = [n for n in (eas.push_name if eas else None, outbound.name if outbound else None) if n]
    return Settings(
        host=name,
        groups=groups,
        push_mode=push_mode,
        mattermost=mattermost,
        eas=eas,
        acme=_acme_for(read, names),
        hpns_region=hpns_region,
        push_name=read.dns_name("push_name") if uses_push_name else None,
        push_https_port=_https_port(read),
        outbound=outbound,
        hpns_outbound_url=_hpns_outbound_url(read, push_mode, hpns_region, outbound_proxies),
        warnings=tuple(read.warnings),
    )


def _hpns_outbound_url(
    read: _Reader,
    push_mode: str,
    hpns_region: str,
    outbound_proxies: Mapping[str, Mapping[str, Any]] | None,
) -> str | None:
    """The outbound proxy URL Mattermost servers use for HPNS, from the inventory's
    outbound_proxies hosts (they must agree), or None for direct HPNS."""
    use = read.raw("hpns_use_outbound_proxy", None)
    if use is not None and not isinstance(use, bool):
        raise read.error("hpns_use_outbound_proxy", use, "true, false, or None (automatic)")
    if push_mode != "hpns" or not outbound_proxies or use is False:
        return None
    urls = {
        proxy: _outbound(_Reader(proxy, data), hpns_region).url
        for proxy, data in outbound_proxies.items()
    }
    if len(set(urls.values())) > 1:
        raise read.error(
            "outbound_proxy_name",
            urls,
            "one name and port for every outbound proxy (Mattermost servers use one URL)",
        )
    return next(iter(urls.values()))


def load_settings(host: Any) -> Settings:
    """Validate the current pyinfra host's data: ``load_settings(host)`` in a deploy file.

    Mattermost servers in hpns mode also read the inventory's outbound_proxies hosts: their
    URL is where the servers send pushes."""
    groups = tuple(getattr(host, "groups", ()) or ())
    proxies = {
        proxy.name: proxy.data.dict()
        for proxy in host.inventory.get_group("outbound_proxies", [])
        if "mattermost" in groups
    }
    return settings_from_data(host.name, groups, host.data.dict(), proxies)


def certificate_settings_from_data(
    name: str, groups: tuple[str, ...], data: Mapping[str, Any]
) -> CertificateSettings:
    """What certificate renewal needs, validating only that (plus the data-wide unknown-key
    and placeholder checks): no push credential or release archive is read or required.

    certificate_settings_from_data("push1", ("push_proxies",), data).names
    == ("push.example.com",)
    """
    read = _Reader(name, data)
    _check_data(read)
    push_mode = read.choice("push_mode", PUSH_MODES)
    names = []
    if push_mode == "eas" and "push_proxies" in groups:
        names.append(read.dns_name("push_name"))
    if push_mode == "hpns" and "outbound_proxies" in groups:
        names.append(read.dns_name("outbound_proxy_name"))
    acme = _acme_for(read, names)
    return CertificateSettings(
        host=name, acme=acme, names=tuple(names), warnings=tuple(read.warnings)
    )


def _acme_for(read: _Reader, names: list[str]) -> AcmeConfig:
    """The ACME settings, with the certificate source checked for the names the host serves:
    a DNS-01 zone that holds them, or certificate files that are good for them."""
    acme = _acme(read)
    if acme.dns is not None:
        for domain in names:
            if not (domain == acme.dns.zone or domain.endswith("." + acme.dns.zone)):
                raise read.error(
                    "acme_dns_zone",
                    acme.dns.zone,
                    f"the DNS zone that holds {domain} (its DNS-01 record "
                    f"_acme-challenge.{domain} is added there)",
                )
    if acme.source == "files" and names:
        if len(names) > 1:
            raise read.error(
                "tls_certificate_source", "files", "one TLS name per host with certificate files"
            )
        return replace(acme, files=_certificate_files(read, names[0]))
    return acme


def _certificate_files(read: _Reader, domain: str) -> CertificateFiles:
    """The files a site brings, checked as the hosts' clients would check them (key matches,
    chain complete up to a trusted root, name, dates), before any host changes."""
    from mmpush.certs.files import check_certificate_files

    paths = {}
    for key in ("tls_certificate_file", "tls_certificate_key_file"):
        paths[key] = read.local_file(key, read.raw(key))
    optional = {}
    for key in ("tls_certificate_chain_file", "tls_trust_anchors_file"):
        value = read.raw(key)
        optional[key] = read.local_file(key, value) if value else None
    check = check_certificate_files(
        domain,
        paths["tls_certificate_file"],
        paths["tls_certificate_key_file"],
        optional["tls_certificate_chain_file"],
        optional["tls_trust_anchors_file"],
    )
    if check.errors:
        raise read.error(
            "tls_certificate_file",
            str(paths["tls_certificate_file"]),
            "; ".join(check.errors),
        )
    read.warnings.extend(f"tls_certificate_file: {warning}" for warning in check.warnings)
    key = read.secret("tls_certificate_key_file", str(paths["tls_certificate_key_file"]))
    return CertificateFiles(
        certificate_file=str(paths["tls_certificate_file"]),
        fullchain=check.fullchain_pem.encode(),
        key=key,
        not_after=f"{check.not_after:%Y-%m-%d}" if check.not_after else "",
    )


def runbook_settings_from_data(
    name: str, groups: tuple[str, ...], data: Mapping[str, Any]
) -> RunbookSettings:
    """Validate what the runbooks read (pure, for unit tests); a DM needs both accounts.

    runbook_settings_from_data("mm1", ("mattermost",), {"push_mode": "eas",
                               "runbook_debug_minutes": 5}).debug_minutes == 5
    """
    read = _Reader(name, data)
    _check_data(read)
    push_mode = read.choice("push_mode", PUSH_MODES)
    send_dm = read.boolean("runbook_send_dm", False)
    token = read.raw("runbook_dm_sender_token")
    recipient = read.raw("runbook_dm_recipient")
    if send_dm and "mattermost" in groups and (not token or not recipient):
        raise read.error(
            "runbook_send_dm",
            True,
            "a test account pair: runbook_dm_sender_token (account B's personal access token, "
            "a file or env:NAME) and runbook_dm_recipient (account A's username, logged in "
            "on a device)",
        )
    if recipient is not None:
        recipient = read.text(
            "runbook_dm_recipient",
            pattern=re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$"),
            allowed="a Mattermost username (lowercase letters, digits, . _ -)",
        )
    if send_dm and "mattermost" in groups and read.raw("mattermost_api_url") is None:
        raise read.error(
            "mattermost_api_url",
            None,
            "the server's URL (runbook_send_dm posts the DM through it, from the control node)",
        )
    support_dir = read.text("runbook_support_dir", "support", re.compile(r"^\S+$"), "a path")
    return RunbookSettings(
        host=name,
        push_mode=push_mode,
        mattermost=_mattermost(read, push_mode),
        send_dm=send_dm,
        dm_sender_token=read.secret("runbook_dm_sender_token", token) if token else None,
        dm_recipient=recipient,
        dm_wait_sec=read.integer("runbook_dm_wait_sec", 30, 1, 600),
        debug_minutes=read.integer("runbook_debug_minutes", 30, 1, 1440),
        collect=read.boolean("runbook_collect", False),
        support_dir=support_dir,
    )


def load_runbook_settings(host: Any) -> RunbookSettings:
    """``load_runbook_settings(host)`` in a runbook: the current host's runbook settings."""
    groups = tuple(getattr(host, "groups", ()) or ())
    return runbook_settings_from_data(host.name, groups, host.data.dict())


def load_certificate_settings(host: Any) -> CertificateSettings:
    """``load_certificate_settings(host)`` in deploys/certs.py: the current pyinfra host's
    certificate settings."""
    groups = tuple(getattr(host, "groups", ()) or ())
    return certificate_settings_from_data(host.name, groups, host.data.dict())


def require_mode(settings: Settings, mode: str) -> None:
    """Stop a mode's deploy run against data that says another mode (no silent surprise).

    require_mode(settings, "eas")   # in deploys/eas.py
    """
    if settings.push_mode != mode:
        raise SettingsError(
            settings.host,
            "push_mode",
            settings.push_mode,
            f"deploys/{mode}.py needs push_mode = {mode!r}; set it in group_data, or run "
            f"deploys/{settings.push_mode}.py",
        )


def log_warnings(settings: Settings) -> None:
    """Show the host's settings warnings (e.g. a credential expiring soon) in the run's output:
    ``log_warnings(settings)`` in a deploy, after ``load_settings``."""
    from pyinfra import logger

    for warning in settings.warnings:
        logger.warning(f"    [{settings.host}] {warning}")
