"""Renew every certificate this project manages, when it is inside its renewal window.

    pyinfra -y inventories/prod/inventory.py deploys/certs.py      # daily (cron, CI)

Needs only the ACME settings and the hosts' certificate state: no push credentials, no
release archive. Does nothing for certificates that are not due (ARI window when the CA
offers it, else a third of the lifetime left, or `acme_renew_days`). When the CA fails, the
old certificate stays in place and keeps being served; NGINX is reloaded only after a
successful renewal.
"""

from pyinfra import host

from mmpush.certificates import certificate
from mmpush.settings import load_certificate_settings

settings = load_certificate_settings(host)

for name in settings.names:
    certificate(name=f"Certificate for {name}", domain=name, acme_config=settings.acme)
