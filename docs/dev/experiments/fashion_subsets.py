"""The Fashion-MNIST experiments' shared start: run options, threads, and the data subsets."""

from __future__ import annotations

import argparse

import torch

from trajtransfer import load_fashion_mnist


def parse_and_load(ap: argparse.ArgumentParser) -> tuple:
    """Parse ``ap`` (which declares ``--train-subset`` and ``--val-subset``) with ``--threads``
    and ``--seed`` added, set torch's threads, and load the first images of each split."""
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_fashion_mnist()
    data.train = data.train.subset(slice(0, args.train_subset))
    data.val = data.val.subset(slice(0, args.val_subset))
    return args, data
