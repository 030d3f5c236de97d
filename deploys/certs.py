"""Renew every certificate this project manages, when it is inside its renewal window.

    pyinfra -y inventories/prod.py deploys/certs.py      # safe to run daily (cron, CI)

Does nothing for certificates that are not due (ARI window when the CA offers it, else a
third of the lifetime left, or `acme_renew_days`). When the CA fails, the old certificate
stays in place and keeps being served; NGINX is reloaded only after a successful renewal.
"""

from pyinfra import host

from mmpush.certificates import certificate, managed_domains
from mmpush.settings import load_settings

settings = load_settings(host)

for domain in managed_domains(settings):
    certificate(name=f"Certificate for {domain}", domain=domain, acme_config=settings.acme)
