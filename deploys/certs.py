"""Renew every certificate this project manages, when it is inside its renewal window.

    pyinfra -y inventories/mysite/inventory.py deploys/certs.py      # daily (cron, CI)

Needs only the certificate settings and the hosts' certificate state: no push credentials,
no release archive. ACME certificates (HTTP-01 or DNS-01) are renewed inside their window
(the CA's ARI window, else a third of the lifetime left, or `acme_renew_days`); when the CA
fails, the old certificate stays and keeps being served, and NGINX is reloaded only after a
successful renewal. Certificates a site brings (tls_certificate_source = "files") are
installed when the files changed, and a warning names the file 30 days before it expires.
"""

from pyinfra import host, logger

from mmpush.certificates import certificate
from mmpush.settings import load_certificate_settings

settings = load_certificate_settings(host)
for warning in settings.warnings:
    logger.warning(f"    [{host.name}] {warning}")

for name in settings.names:
    certificate(name=f"Certificate for {name}", domain=name, acme_config=settings.acme)
