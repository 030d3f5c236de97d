"""This site's Mattermost servers. Defaults (documented) are in the toolkit's
group_data/all.py; uncomment what differs here."""

# push_contents = "generic"          # no message text in pushes until you opt in
# mattermost_restart_batch = 1       # servers restarted at a time after a change
