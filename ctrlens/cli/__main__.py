"""``python -m ctrlens.cli ...``: the same command line as the ``ctrlens`` script (same exit codes)."""

from ctrlens.cli import main

if __name__ == "__main__":
    main()
