"""Defaults for every host. Override per group (group_data/<group>.py), per host (in the
inventory) or per run (`pyinfra --data key=value`). Every value is validated before any host
is touched (mmpush/settings.py); an error names the host, the key, the value and what is allowed.

This file documents every setting: a key that is not defined here is refused, with the closest
setting suggested ("push_contnets ... did you mean push_contents?"). Also accepted: pyinfra's
own arguments (`_sudo`, ...), connector data (`ssh_*`, `docker_*`, ...), the lab's `lab_*`, and
the site's own keys listed in `extra_data_keys`.

A value starting with "CHANGE-ME" is a placeholder for the site to replace: it is refused, and
the rest of its text is shown as what to put there, e.g.
    push_name = "CHANGE-ME: the push proxy's public DNS name, e.g. push.example.com"
"""

# --- push mode -------------------------------------------------------------------------------
# One of "eas" (your own push proxy), "hpns" (Mattermost's hosted service, Enterprise licence),
# "tpns" (the free test service, unencrypted), "off". Each deploys/<mode>.py refuses data that
# says another mode.
push_mode = "eas"

# --- Mattermost servers (group mattermost) ---------------------------------------------------
# EmailSettings.PushNotificationContents: generic_no_channel | generic | full | id_loaded.
# "generic" by default: pushes carry no message text until an admin opts in.
push_contents = "generic"
# TPNS is unencrypted: full / id_loaded contents are refused with it unless forced.
push_contents_force = False
mattermost_config_path = "/opt/mattermost/config/config.json"
# The systemd service restarted after a change: a unit name (letters, digits and :_.@-\ , not
# starting with "-"), optionally ending in ".service".
mattermost_service = "mattermost"
# LogSettings.FileLevel to set (DEBUG | INFO | ERROR), or None to leave it alone.
mattermost_log_level = None
# An MM_* environment variable that overrides a push setting wins over config.json: the deploy
# stops, naming it, before any host is touched. True: deploy anyway (a warning only).
mattermost_accept_env_overrides = False
# Mattermost servers restart this many at a time after their push settings changed; each batch
# waits until its servers answer mattermost_ping_url again before the next one restarts.
mattermost_restart_batch = 1
mattermost_ping_url = "http://127.0.0.1:8065/api/v4/system/ping"
# Where a server's configuration lives: "auto" (detected from the running service: its
# --config flag or MM_CONFIG), "file" (mattermost_config_path, edited in place) or "database"
# (MM_CONFIG=postgres://..., every High Availability cluster): changed only through the
# config API, never by editing the file or the database, and applied without a restart.
mattermost_config_source = "auto"
# The config API: the local-mode socket first (ServiceSettings.EnableLocalMode), as
# `mmctl --local` uses it; otherwise mattermost_api_url with a system admin's personal access
# token (a file on the control node or "env:NAME", like the push credentials; never printed).
mattermost_local_socket = "/var/tmp/mattermost_local.socket"
mattermost_api_url = None  # e.g. "https://mattermost.example.com"
mattermost_admin_token = None  # e.g. "env:MM_ADMIN_TOKEN"
mattermost_api_ca_bundle = None  # a CA bundle to trust mattermost_api_url (private CA)
# Servers sharing one database configuration are patched once and checked on every node. They
# are grouped by their MM_CONFIG database (host, port, name), or by this name when set.
mattermost_cluster = None

# --- EAS: the push proxy's public name (group push_proxies, and what mattermost points at) ---
# A DNS name that resolves to the push proxy host, e.g. "push.example.com".
push_name = None
# The push front's TLS port (not 80: NGINX serves ACME HTTP-01 challenges and the redirect there).
push_https_port = 443

# --- EAS: the push proxy release --------------------------------------------------------------
push_proxy_version = "6.5.0"
# Official release URL: {version} is filled in, and {arch} with the host's architecture
# (amd64 for x86_64, arm64 for aarch64; other architectures are refused). No other {...}.
# Releases publish no checksums: download the archive once, check it, and pin its sha256 here
# (64 hex characters). Required.
push_proxy_url = (
    "https://github.com/mattermost/mattermost-push-proxy/releases/download/"
    "v{version}/mattermost-push-proxy-linux-{arch}.tar.gz"
)
push_proxy_sha256 = None
# Air-gapped sites: a local path (on the control node) to the release archive; it is uploaded
# instead of downloaded, and must match push_proxy_sha256 too.
push_proxy_archive = None

# On 127.0.0.1 only, behind NGINX: 1024 to 65535 (the proxy runs as its own user), and not
# push_https_port.
push_proxy_listen_port = 8066
push_proxy_throttle_per_sec = 300
push_proxy_throttle_memory_store_size = 50000
# The whole time the proxy spends on one push, all attempts included: 1 to 29 s, since the
# Mattermost server stops waiting for its answer after 30 s.
push_proxy_send_timeout_sec = 25
# The time one delivery attempt may take (the proxy tries up to 3 times within the send
# timeout): 1 to push_proxy_send_timeout_sec.
push_proxy_retry_timeout_sec = 8
# The proxy's Prometheus /metrics (on its own listener).
push_proxy_metrics = False
# Who may read /metrics besides loopback, e.g. ["10.0.20.5/32"]; [] = loopback only.
push_proxy_metrics_allowed_networks = []
push_proxy_log_format = "plain"  # or "json"
# Egress proxy for APNs/FCM (the push proxy's HTTPS_PROXY), e.g. "http://proxy.example.net:3128":
# http:// or https://, a host and optional port, no path and no user:password@. None = direct.
push_proxy_https_proxy = None
# Destinations reached without the egress proxy (NO_PROXY): host names, .domains (or
# *.domains), IP addresses and CIDRs, e.g. ["localhost", ".internal.example", "10.0.0.0/8"].
push_proxy_no_proxy = []
# Clients allowed to use the push front (the Mattermost servers, or the addresses they are
# NATed to), e.g. ["10.0.10.0/24"]; [] = any client.
push_front_allowed_networks = []
# Extra NGINX directives for the push front's TLS server block (e.g. access_log, allow/deny,
# a `location /x { ... }`). Refused before any host is touched: unbalanced braces, a `}` that
# would close the server block, `server`/`http`/`events`/`stream`/`mail`/`upstream` blocks, an
# unterminated directive or quote. Then checked by `nginx -t` on the host before any reload.
push_front_extra_config = ""

# --- EAS: app credentials (files on the control node, outside the repo, or "env:NAME") --------
# Each file is parsed on the control node as the push proxy would parse it, before any host is
# touched; a file it would reject is refused with the fix.
# Apple, one entry per app type (apple, apple_rn, apple_rnbeta), either a .p8 token key
# (the file's first PEM block: a PKCS#8 "PRIVATE KEY" holding an EC P-256 key, as Apple
# issues it; key id and team id: 10 characters A-Z 0-9):
#   {"type": "apple_rn", "topic": "com.example.mattermost",
#    "auth_key_file": "~/secrets/AuthKey_ABCDE12345.p8",
#    "auth_key_id": "ABCDE12345", "team_id": "TEAM123456", "development": False}
# or a certificate (one PEM holding the certificate and its private key; an encrypted key must
# be in the legacy "Proc-Type: 4,ENCRYPTED" form, and certificate_password_file must decrypt
# it; the topic must be the certificate's UID; expired: refused, < 30 days left: a warning):
#   {"type": "apple_rn", "topic": "com.example.mattermost",
#    "certificate_file": "~/secrets/apns.pem", "certificate_password_file": None}
push_proxy_apple = []
# Android (FCM v1), one entry per app type (android, android_rn): a service-account key JSON
# (type "service_account", project_id, client_email, token_uri, an RSA private_key):
#   {"type": "android_rn", "service_account_file": "~/secrets/fcm-service-account.json"}
push_proxy_android = []

# --- certificates (ACME) --------------------------------------------------------------------
acme_directory_url = "https://acme-v02.api.letsencrypt.org/directory"
# staging: "https://acme-staging-v02.api.letsencrypt.org/directory"
acme_email = None
# Extra CA bundle to trust the ACME server itself (a private ACME CA); None = system trust.
acme_ca_bundle = None
# The ACME account key, kept on the control node (default ~/.config/mmpush/acme/...).
acme_account_key_file = None
# Also renew when fewer than this many days are left; None = the CA's ARI window, else a
# third of the lifetime left (certbot's rule). deploys/certs.py is safe to run daily.
acme_renew_days = None

# --- certificate sources -------------------------------------------------------------------
# How the TLS certificates of the push front and the outbound proxy are had, per group or host:
#   "acme-http01": ACME, answered over HTTP on port 80 (the name must be reachable from the CA);
#   "acme-dns01":  ACME, answered with a TXT record added by an RFC 2136 dynamic update signed
#                  with TSIG (internal names: nothing needs to reach the host);
#   "files":       a certificate from your own PKI (renewal stays with you: the deploys warn
#                  30 days before it expires).
tls_certificate_source = "acme-http01"
# acme-dns01: the primary DNS server of the zone, the zone, and the TSIG key allowed to update
# _acme-challenge TXT records there (the secret: a file on the control node or "env:NAME").
acme_dns_server = None  # e.g. "ns1.internal.example" or "10.0.0.53:53"
acme_dns_zone = None  # e.g. "internal.example"
acme_dns_tsig_key_name = None  # e.g. "acme-update"
acme_dns_tsig_algorithm = "hmac-sha256"
acme_dns_tsig_secret = None  # e.g. "env:ACME_TSIG_SECRET"
# How long to wait for every authoritative server of the zone to answer the record.
acme_dns_propagation_timeout = 120
# files: the certificate (it may hold the intermediates), its key, more intermediates, and the
# roots the hosts' clients trust (None: this control node's system store). Files on the control
# node; the key is a secret (never printed) and lands 0600.
tls_certificate_file = None
tls_certificate_key_file = None
tls_certificate_chain_file = None
tls_trust_anchors_file = None

# --- HPNS -------------------------------------------------------------------------------------
# global | us | eu | ap | legacy (https://push.mattermost.com)
hpns_region = "global"
# Send HPNS pushes through the outbound proxy: None = when the inventory has outbound_proxies
# hosts; False = directly to the region even then.
hpns_use_outbound_proxy = None

# --- HPNS: outbound proxy (group outbound_proxies) ---------------------------------------------
# The proxy's DNS name and port, as Mattermost servers will use it: https://<name>:<port>.
outbound_proxy_name = None  # e.g. "push.internal.example"
# 1 to 65535, not 80 (NGINX serves ACME HTTP-01 challenges there).
outbound_proxy_port = 8000
# What it forwards to: https://<DNS name>[:port] (port 1 to 65535), no path. None = the
# hpns_region URL.
outbound_proxy_upstream = None
# Client networks allowed to use it (e.g. the Mattermost servers); [] = any.
outbound_proxy_allowed_networks = []
# DNS servers NGINX uses to re-resolve the upstream while running: "192.0.2.53",
# "192.0.2.53:5353", "[2001:db8::53]" or "[2001:db8::53]:53"; [] = the host's
# /etc/resolv.conf nameservers.
outbound_proxy_resolvers = []
# CA bundle (PEM file on the control node, at least one certificate) to verify the upstream;
# None = the host's trust store.
outbound_proxy_ca_bundle = None
# True: pool upstream connections (keepalive) but resolve the upstream only at start/reload.
# False (default): re-resolve while running, TLS sessions resumed. See docs/outbound-proxy.md.
outbound_proxy_keepalive = False

# --- runbooks (deploys/runbooks/, docs/runbooks/) ------------------------------------------------
# Usually given on the command line: pyinfra INVENTORY deploys/runbooks/test_push.py
#   --data runbook_send_dm=true
# test_push.py: also do the guide's end-to-end check: account B sends account A a DM through
# mattermost_api_url, and the server's logs show the push to A's device(s).
runbook_send_dm = False
# Account B's personal access token: a file on the control node or "env:NAME" (never in git).
runbook_dm_sender_token = None
# Account A's username: logged in on a phone (away or offline on other clients).
runbook_dm_recipient = None
# Seconds the end-to-end DM waits for the server to log the push.
runbook_dm_wait_sec = 30
# push_debug.py: minutes until the host itself lowers the log levels again (a transient
# systemd timer on the host, so it happens even if this run is interrupted).
runbook_debug_minutes = 30
# push_debug.py: also collect a support bundle into <runbook_support_dir>/<host>-<time>/ here.
runbook_collect = False
runbook_support_dir = "support"

# --- the site's own data ------------------------------------------------------------------------
# Names of extra keys the site keeps in its inventory or group data for its own use (they are
# accepted and ignored), e.g. ["site_owner", "backup_window"].
extra_data_keys = []
