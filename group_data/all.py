"""Defaults for every host. Override per group (group_data/<group>.py), per host (in the
inventory) or per run (`pyinfra --data key=value`). Every value is validated before any host
is touched (mmpush/settings.py); an error names the host, the key, the value and what is allowed.
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
mattermost_service = "mattermost"
# LogSettings.FileLevel to set (DEBUG | INFO | ERROR), or None to leave it alone.
mattermost_log_level = None

# --- EAS: the push proxy's public name (group push_proxies, and what mattermost points at) ---
# A DNS name that resolves to the push proxy host, e.g. "push.example.com".
push_name = None
push_https_port = 443

# --- EAS: the push proxy release --------------------------------------------------------------
push_proxy_version = "6.5.0"
# Official release URL ({version} is filled in). Releases publish no checksums: download the
# archive once, check it, and pin its sha256 here (64 hex characters). Required.
push_proxy_url = (
    "https://github.com/mattermost/mattermost-push-proxy/releases/download/"
    "v{version}/mattermost-push-proxy-linux-amd64.tar.gz"
)
push_proxy_sha256 = None
# Air-gapped sites: a local path (on the control node) to the release archive; it is uploaded
# instead of downloaded, and must match push_proxy_sha256 too.
push_proxy_archive = None

push_proxy_listen_port = 8066  # on 127.0.0.1 only, behind NGINX
push_proxy_throttle_per_sec = 300
push_proxy_throttle_memory_store_size = 50000
push_proxy_send_timeout_sec = 30
push_proxy_retry_timeout_sec = 8
push_proxy_metrics = False
push_proxy_log_format = "plain"  # or "json"
# Extra NGINX directives for the push front's TLS server block (e.g. access_log, allow/deny).
# Checked by `nginx -t` on the host before any reload; a failing value is rolled back.
push_front_extra_config = ""

# --- EAS: app credentials (files on the control node, outside the repo, or "env:NAME") --------
# Apple, one entry per app type (apple, apple_rn, apple_rnbeta), either a .p8 token key:
#   {"type": "apple_rn", "topic": "com.example.mattermost",
#    "auth_key_file": "~/secrets/AuthKey_ABCDE12345.p8",
#    "auth_key_id": "ABCDE12345", "team_id": "TEAM123456", "development": False}
# or a certificate (one PEM holding certificate and private key):
#   {"type": "apple_rn", "topic": "com.example.mattermost",
#    "certificate_file": "~/secrets/apns.pem", "certificate_password_file": None}
push_proxy_apple = []
# Android (FCM v1), one entry per app type (android, android_rn):
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

# --- HPNS -------------------------------------------------------------------------------------
# global | us | eu | ap | legacy (https://push.mattermost.com)
hpns_region = "global"
# Send HPNS pushes through the outbound proxy: None = when the inventory has outbound_proxies
# hosts; False = directly to the region even then.
hpns_use_outbound_proxy = None

# --- HPNS: outbound proxy (group outbound_proxies) ---------------------------------------------
# The proxy's DNS name and port, as Mattermost servers will use it: https://<name>:<port>.
outbound_proxy_name = None  # e.g. "push.internal.example"
outbound_proxy_port = 8000
# What it forwards to: https://<name>[:port], no path. None = the hpns_region URL.
outbound_proxy_upstream = None
# Client networks allowed to use it (e.g. the Mattermost servers); [] = any.
outbound_proxy_allowed_networks = []
# DNS servers NGINX uses to re-resolve the upstream while running; [] = the host's
# /etc/resolv.conf nameservers.
outbound_proxy_resolvers = []
# CA bundle (file on the control node) to verify the upstream; None = the host's trust store.
outbound_proxy_ca_bundle = None
# True: pool upstream connections (keepalive) but resolve the upstream only at start/reload.
# False (default): re-resolve while running, TLS sessions resumed. See docs/outbound-proxy.md.
outbound_proxy_keepalive = False
