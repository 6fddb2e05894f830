#!/bin/sh
# The fine-tuning scenario on Fashion-MNIST (README table, docs/img/finetune_transfer_fashion_mnist.png
# and docs/img/lmc_fashion_mnist.png): MLP 784-512-512, source and target pre-trained on classes 0-4
# (5,000 images, 5 epochs, lr 0.05, seeds S and S+1), the source fine-tuned on classes 5-9 with a new
# 5-way head (5,000 images, 5 epochs, lr 0.01), T = 10, best step on 2,000 validation images; every start
# then fine-tuned 1 epoch. About 10 minutes per seed with `nice -n 19` on a busy 2-core machine.
#
#   sh docs/dev/experiments/finetune_fashion_mnist.sh [seeds...]      (default: 0; from the repo root)
set -e
SEEDS=${*:-0}
for S in $SEEDS; do
    OUT=runs/finetune-fmnist-seed$S
    PYTHONPATH=python nice -n 19 python -m trajtransfer finetune-transfer \
        --train-subset 5000 --val-subset 2000 --threads 2 --seed "$S" --out "$OUT" --quiet
    if [ "$S" = 0 ]; then
        cp "$OUT/lmc.png" docs/img/lmc_fashion_mnist.png
        cp "$OUT/transfer.png" docs/img/finetune_transfer_fashion_mnist.png
    fi
done
