"""What `make demo` prints after deploying EAS on the lab: what runs where, and how to send
a test push.

    python -m mmpush.demo
"""

from __future__ import annotations

from mmpush.lab.inventory import lab_state


def main() -> None:
    state = lab_state()
    fixtures = state["fixtures"]
    print(
        f"""
EAS is deployed on the lab:
  push1 (push.lab.test)  Mattermost Push Proxy {fixtures["version"]} (mattermost-push-proxy,
                         127.0.0.1:8066) behind NGINX TLS on 443, certificate from the lab's
                         ACME CA (Pebble, {state["acme"]["directory_url"]})
  mm1   (mm.lab.test)    Mattermost (emulator): PushNotificationServer = https://push.lab.test,
                         contents generic

Send a test push (Account B sends Account A a DM; Account A's phone gets the push):
  .venv/bin/mmpush lab send-dm "Hello"

Look around:
  .venv/bin/mmpush lab ssh push1 -- journalctl -u mattermost-push-proxy -n 20
  .venv/bin/mmpush lab ssh mm1 -- grep -i push /opt/mattermost/logs/mattermost.log
  .venv/bin/pyinfra inventories/lab.py deploys/eas.py --dry --data push_contents=full
  .venv/bin/pytest tests/verify --inventory inventories/lab.py

Remove the lab: make lab-down
"""
    )


if __name__ == "__main__":
    main()
