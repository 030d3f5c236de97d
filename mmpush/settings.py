"""Typed, validated settings: the only way deploy code reads host data.

Every value comes from pyinfra host data (``group_data/*.py``, the inventory, ``--data``).
``load_settings(host)`` checks all of it before any operation is generated, and every error
names the host, the key, the bad value and what is allowed:

    from pyinfra import host
    settings = load_settings(host)
    settings.eas.push_name            # "push.example.com"
    settings.mattermost.contents      # "generic"

Credential files are read on the control node (paths outside the repo, or ``env:NAME`` for an
environment variable holding the content); their content is kept out of ``repr`` so it never
reaches logs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import PyinfraError

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
    "v{version}/mattermost-push-proxy-linux-amd64.tar.gz"
)

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.-]+)?$")
_APPLE_ID = re.compile(r"^[A-Z0-9]{10}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class SettingsError(PyinfraError, ValueError):
    """A setting is invalid. The message names host, key, value and what is allowed.

    A PyinfraError, so the pyinfra CLI prints the message alone and stops before any
    operation runs on any host."""

    def __init__(self, host: str, key: str, value: object, allowed: str) -> None:
        self.host, self.key, self.value, self.allowed = host, key, value, allowed
        super().__init__(f"host {host}: {key} = {value!r} is invalid: {allowed}")


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


@dataclass(frozen=True)
class PushProxyArtifact:
    """The push proxy release: a URL the host downloads, or a local archive uploaded to it
    (air-gapped sites). Either way pinned by sha256."""

    version: str
    sha256: str
    url: str | None
    archive: Path | None


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


@dataclass(frozen=True)
class MattermostSettings:
    """The push settings of Mattermost servers (group ``mattermost``)."""

    config_path: str
    service: str
    contents: str
    contents_force: bool
    log_level: str | None


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
        return self.upstream_url.removeprefix("https://").split("/")[0].split(":")[0]

    @property
    def upstream_port(self) -> int:
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


# --- readers: one per kind of value, each raising SettingsError ---------------------------


class _Reader:
    """Reads and checks host data values, naming ``host`` in every error."""

    def __init__(self, host: str, data: Mapping[str, Any]) -> None:
        self.host = host
        self.data = data

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

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, value, f"a whole number from {low} to {high}")
        return value

    def port(self, key: str, default: int) -> int:
        return self.integer(key, default, 1, 65535)

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
            raise self.error(key, value, "an https:// URL")
        return value

    def local_file(self, key: str, value: object) -> Path:
        if not isinstance(value, str | os.PathLike) or not value:
            raise self.error(key, value, "a path to a file on the control node")
        path = Path(value).expanduser()
        if not path.is_file():
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


# --- sections ------------------------------------------------------------------------------


def _unique_type(read: _Reader, key: str, kind: str, seen: list[str]) -> None:
    """One entry per app type: the proxy keys its clients (and we its credentials) by type."""
    if kind in seen:
        raise read.error(f"{key}.type", kind, "one entry per app type (this type is listed twice)")


def _apple_entries(read: _Reader) -> tuple[ApplePush, ...]:
    entries = read.raw("push_proxy_apple", [])
    if not isinstance(entries, list | tuple):
        raise read.error("push_proxy_apple", entries, "a list of dicts (see group_data/all.py)")
    apple = []
    for index, entry in enumerate(entries):
        key = f"push_proxy_apple[{index}]"
        if not isinstance(entry, Mapping):
            raise read.error(key, entry, "a dict with type, topic and credentials")
        sub = _Reader(read.host, {f"{key}.{k}": v for k, v in entry.items()})
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
            apple.append(
                ApplePush(
                    kind,
                    topic,
                    development,
                    auth_key=sub.secret(f"{key}.auth_key_file", entry["auth_key_file"]),
                    auth_key_id=sub.text(
                        f"{key}.auth_key_id",
                        pattern=_APPLE_ID,
                        allowed="Apple's 10-character key id",
                    ),
                    team_id=sub.text(
                        f"{key}.team_id", pattern=_APPLE_ID, allowed="Apple's 10-character team id"
                    ),
                )
            )
        elif entry.get("certificate_file"):
            password = entry.get("certificate_password_file")
            apple.append(
                ApplePush(
                    kind,
                    topic,
                    development,
                    certificate=sub.secret(f"{key}.certificate_file", entry["certificate_file"]),
                    certificate_password=(
                        sub.secret(f"{key}.certificate_password_file", password)
                        if password
                        else None
                    ),
                )
            )
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
    android = []
    for index, entry in enumerate(entries):
        key = f"push_proxy_android[{index}]"
        if not isinstance(entry, Mapping):
            raise read.error(key, entry, "a dict with type and service_account_file")
        sub = _Reader(read.host, {f"{key}.{k}": v for k, v in entry.items()})
        kind = sub.choice(f"{key}.type", ANDROID_TYPES)
        _unique_type(read, key, kind, [a.type for a in android])
        android.append(
            AndroidPush(
                kind,
                sub.secret(f"{key}.service_account_file", entry.get("service_account_file")),
            )
        )
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
    url = read.https_url("push_proxy_url", PUSH_PROXY_RELEASE_URL).format(version=version)
    return PushProxyArtifact(version, sha256, url, None)


def _eas(read: _Reader) -> EasSettings:
    return EasSettings(
        push_name=read.dns_name("push_name"),
        https_port=read.port("push_https_port", 443),
        artifact=_artifact(read),
        listen_port=read.port("push_proxy_listen_port", 8066),
        throttle_per_sec=read.integer("push_proxy_throttle_per_sec", 300, 1, 1_000_000),
        throttle_memory_store_size=read.integer(
            "push_proxy_throttle_memory_store_size", 50000, 1, 100_000_000
        ),
        send_timeout_sec=read.integer("push_proxy_send_timeout_sec", 30, 1, 600),
        retry_timeout_sec=read.integer("push_proxy_retry_timeout_sec", 8, 1, 600),
        enable_metrics=read.boolean("push_proxy_metrics", False),
        log_format=read.choice("push_proxy_log_format", ("plain", "json"), "plain"),
        front_extra_config=read.text(
            "push_front_extra_config", "", allowed="NGINX directives (text), checked by nginx -t"
        ),
        apple=_apple_entries(read),
        android=_android_entries(read),
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
    return AcmeConfig(directory, email, ca_bundle, key_file, renew_days)


def _mattermost(read: _Reader, push_mode: str) -> MattermostSettings:
    contents = read.choice("push_contents", PUSH_CONTENTS, "generic")
    force = read.boolean("push_contents_force", False)
    level = read.raw("mattermost_log_level")
    if level is not None:
        level = read.choice("mattermost_log_level", LOG_LEVELS)
    return MattermostSettings(
        config_path=read.text(
            "mattermost_config_path",
            "/opt/mattermost/config/config.json",
            re.compile(r"^/\S+\.json$"),
            "an absolute path to config.json",
        ),
        service=read.text(
            "mattermost_service", "mattermost", re.compile(r"^[\w@.-]+$"), "a systemd unit name"
        ),
        contents=contents,
        contents_force=force,
        log_level=level,
    )


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


def _resolvers(read: _Reader, key: str) -> tuple[str, ...]:
    values = read.raw(key, [])
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise read.error(key, values, "a list of DNS servers, e.g. ['192.0.2.53', '10.0.0.2:53']")
    resolvers = []
    for value in values:
        text = str(value)
        # "192.0.2.53:5353" has one colon; an IPv6 address has several and no port here
        address, port = text.rsplit(":", 1) if text.count(":") == 1 else (text, "")
        try:
            ipaddress.ip_address(address)
            if port and not 1 <= int(port) <= 65535:
                raise ValueError(port)
        except ValueError:
            raise read.error(key, value, "an IP address, optionally with :port") from None
        resolvers.append(str(value))
    return tuple(resolvers)


def _outbound(read: _Reader, hpns_region: str) -> OutboundProxySettings:
    upstream = read.https_url("outbound_proxy_upstream", HPNS_REGIONS[hpns_region])
    authority = upstream.removeprefix("https://").split("/")[0]
    host_part, _, port_part = authority.partition(":")
    if (
        not is_dns_name(host_part)
        or (port_part and not port_part.isdigit())
        or (upstream.rstrip("/") != f"https://{authority}")
    ):
        raise read.error(
            "outbound_proxy_upstream", upstream, "https://<DNS name>[:port] with no path"
        )
    bundle = read.raw("outbound_proxy_ca_bundle")
    return OutboundProxySettings(
        name=read.dns_name("outbound_proxy_name"),
        port=read.port("outbound_proxy_port", 8000),
        upstream_url=upstream.rstrip("/"),
        allowed_networks=_networks(read, "outbound_proxy_allowed_networks"),
        resolvers=_resolvers(read, "outbound_proxy_resolvers"),
        ca_bundle=read.secret("outbound_proxy_ca_bundle", bundle) if bundle else None,
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
    push_mode = read.choice("push_mode", PUSH_MODES)
    uses_push_name = push_mode == "eas" and {"mattermost", "push_proxies"} & set(groups)
    eas = _eas(read) if push_mode == "eas" and "push_proxies" in groups else None
    mattermost = _mattermost(read, push_mode)
    _check_contents_for_mode(read, push_mode, mattermost)
    hpns_region = read.choice("hpns_region", tuple(HPNS_REGIONS), "global")
    outbound = None
    if push_mode == "hpns" and "outbound_proxies" in groups:
        outbound = _outbound(read, hpns_region)
    return Settings(
        host=name,
        groups=groups,
        push_mode=push_mode,
        mattermost=mattermost,
        eas=eas,
        acme=_acme(read),
        hpns_region=hpns_region,
        push_name=read.dns_name("push_name") if uses_push_name else None,
        push_https_port=read.port("push_https_port", 443),
        outbound=outbound,
        hpns_outbound_url=_hpns_outbound_url(read, push_mode, hpns_region, outbound_proxies),
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
