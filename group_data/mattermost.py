"""Settings for the Mattermost servers. Defaults are in all.py."""
