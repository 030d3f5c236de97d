"""This site's outbound proxy (HPNS through a proxy, push_mode = "hpns"): the name and port the
Mattermost servers use, https://<outbound_proxy_name>:<outbound_proxy_port>."""

# outbound_proxy_name = "push.internal.example"
# outbound_proxy_port = 8000
# outbound_proxy_allowed_networks = ["10.0.10.0/24"]    # the Mattermost servers
