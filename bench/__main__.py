"""Run every benchmark: `python -m bench` (what `make bench` does)."""

from bench import eas_deploy, lab_up, outbound_proxy

if __name__ == "__main__":
    lab_up.main()
    eas_deploy.main()
    outbound_proxy.main()
