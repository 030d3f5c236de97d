"""Certificate sources beside ACME HTTP-01, for names the internet cannot reach.

- `mmpush.certs.dns01`: ACME DNS-01 through RFC 2136 dynamic updates signed with TSIG
  (dnspython), run from the control node; pair it with `mmpush.acme.obtain_certificate_dns01`.
- `mmpush.certs.files`: checks for a certificate, chain and key a site brings from its own PKI,
  and the full chain in the order NGINX wants.
"""
