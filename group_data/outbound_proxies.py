"""Settings for the outbound proxy hosts (HPNS through a proxy). Defaults are in all.py."""
