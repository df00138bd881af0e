"""``python -m ctrlens.train ARGS`` == ``ctrlens train ARGS``; the entry point for torchrun::

    torchrun --nproc_per_node=4 -m ctrlens.train --data world/ --model din --days 2026-01-01:2026-01-07 --out runs/din --device cuda
"""

from ctrlens.cli import main

if __name__ == "__main__":
    import sys

    main(["train", *sys.argv[1:]])
