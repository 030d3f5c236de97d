"""Settings for the hosts that run the push proxy (EAS). Defaults are in all.py."""
