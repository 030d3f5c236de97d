"""The runbooks: the push notification guide's troubleshooting procedures, run like the deploys
against any inventory (docs/runbooks/).

- :mod:`mmpush.runbooks.probe`: a probe push per app type from every Mattermost server
  (deploys/runbooks/test_push.py), and :mod:`mmpush.runbooks.dm`, the end-to-end DM;
- :mod:`mmpush.runbooks.debug`: DEBUG logging lowered again by the host itself, and
  :mod:`mmpush.runbooks.bundle`, the support bundle (secrets redacted) of push_debug.py;
- :mod:`mmpush.runbooks.logs`: where a server's logs are, as the running server has them.
"""
