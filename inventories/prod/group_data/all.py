"""This site's values that every group needs (the toolkit's defaults, documented, are in
group_data/all.py at the top of the repository; what is set here wins over them).

Values starting with CHANGE-ME must be replaced: until they are, every run stops before any
host is touched, saying what to put there.
"""

# eas (your own push proxy) | hpns (Mattermost's hosted service) | tpns (test service) | off
push_mode = "eas"

# EAS: the push proxy's public name. The Mattermost servers use https://<push_name>, and the
# push proxy hosts get a certificate for it: a DNS name that resolves to the push proxy host.
push_name = "CHANGE-ME: the push proxy's public DNS name, e.g. push.example.com"

# Let's Encrypt (the default) wants an address for expiry notices; None = no account email.
acme_email = None
# Staging while you try things out (its certificates are not trusted by the apps):
# acme_directory_url = "https://acme-staging-v02.api.letsencrypt.org/directory"
