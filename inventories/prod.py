"""A production inventory: copy it, list your hosts, set the settings, then run

    pyinfra inventories/prod.py deploys/eas.py          # (or hpns.py, tpns.py, off.py)
    pytest tests/verify --inventory inventories/prod.py

Hosts are reached over SSH (pyinfra's ssh_* data: user, key, known_hosts...). Settings are
documented in group_data/all.py; put site values in group_data/<group>.py or here.
"""

_ssh = {"ssh_user": "deploy", "_sudo": True}

# Mattermost servers: their config.json gets the push settings.
mattermost = [
    ("mm1.example.com", {**_ssh}),
    ("mm2.example.com", {**_ssh}),
]

# The push proxy host(s) (EAS): proxy + NGINX TLS front on push_name.
push_proxies = (
    [("push1.example.com", {**_ssh})],
    {
        "push_name": "push.example.com",
        "push_proxy_sha256": "0000000000000000000000000000000000000000000000000000000000000000",
        "acme_email": "ops@example.com",
        "push_proxy_apple": [
            {
                "type": "apple_rn",
                "topic": "com.example.mattermost",
                "auth_key_file": "~/secrets/AuthKey_ABCDE12345.p8",
                "auth_key_id": "ABCDE12345",
                "team_id": "TEAM123456",
            }
        ],
        "push_proxy_android": [
            {"type": "android_rn", "service_account_file": "~/secrets/fcm-service-account.json"}
        ],
    },
)

# HPNS through an outbound proxy (push_mode = "hpns"; deploys/hpns.py): uncomment, and the
# Mattermost servers will use https://push.internal.example:8000.
# outbound_proxies = (
#     [("proxy1.example.com", {**_ssh})],
#     {
#         "outbound_proxy_name": "push.internal.example",
#         "outbound_proxy_port": 8000,
#         "outbound_proxy_allowed_networks": ["10.0.10.0/24"],
#     },
# )
