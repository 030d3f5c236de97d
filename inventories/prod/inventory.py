"""An example production site: copy this directory, list your hosts here, put your site's
values in its group_data/, then run the deploys against it.

    cp -r inventories/prod inventories/mysite
    $EDITOR inventories/mysite/inventory.py inventories/mysite/group_data/*.py
    mmpush check inventories/mysite/inventory.py            # every setting, no host touched
    pyinfra inventories/mysite/inventory.py deploys/eas.py --dry
    pyinfra inventories/mysite/inventory.py deploys/eas.py
    pytest tests/verify --inventory inventories/mysite/inventory.py

pyinfra loads the toolkit's defaults (group_data/ at the top of the repository) and then the
site's (group_data/ next to this file), so a `git pull` of the toolkit never touches a site's
values. Every setting is documented in the toolkit's group_data/all.py.

Hosts are reached over SSH as a user with passwordless sudo (pyinfra's ssh_* data: user,
key, known_hosts, port...). See docs/before-you-start.md for what the hosts need.
"""

# How every host is reached: a user with sudo, never root (docs/before-you-start.md).
_ssh = {"ssh_user": "deploy", "_sudo": True}

# Mattermost servers: their push settings are changed (config.json, or the config API).
mattermost = [
    ("mm1.example.com", {**_ssh}),
    ("mm2.example.com", {**_ssh}),
]

# EAS: the push proxy host(s): the Mattermost Push Proxy behind NGINX on push_name.
push_proxies = [
    ("push1.example.com", {**_ssh}),
]

# HPNS through an outbound proxy (push_mode = "hpns", deploys/hpns.py): uncomment, and set
# the proxy's name in group_data/outbound_proxies.py.
# outbound_proxies = [
#     ("proxy1.example.com", {**_ssh}),
# ]
