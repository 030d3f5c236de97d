"""Run every benchmark: `python -m bench` (what `make bench` does)."""

from bench import eas_deploy, lab_up

if __name__ == "__main__":
    lab_up.main()
    eas_deploy.main()
