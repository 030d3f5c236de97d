"""The local lab as a pyinfra inventory (run `mmpush lab up` first).

    pyinfra -y inventories/lab.py deploys/eas.py
    pytest tests/verify --inventory inventories/lab.py

Hosts, addresses and SSH files come from the lab's state (`mmpush lab status --json`);
SSH host keys are pinned in the lab's known_hosts and checked strictly.
"""

from mmpush.lab.inventory import lab_group

mattermost = lab_group("mattermost")
push_proxies = lab_group("push_proxies")
outbound_proxies = lab_group("outbound_proxies")
# The stand-in for Mattermost's hosted push services (lab only; no deploy targets it).
lab_upstreams = lab_group("lab_upstreams")
