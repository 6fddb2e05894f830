"""Datasets: idx reader/writer, bundled digits, Fashion-MNIST/MNIST/CIFAR-10 loaders, seeded loaders."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trajtransfer.kit.data import (  # noqa: E402
    FASHION_MNIST_DIR,
    ArrayDataset,
    Loader,
    eval_batches,
    load_cifar10,
    load_dataset,
    load_digits_data,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    write_idx,
)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype,shape", [(np.uint8, (7, 4, 3)), (np.int32, (5,)), (np.float32, (2, 3)),
                                         (np.int16, (3, 2)), (np.float64, (4, 1, 2)), (np.int8, (6,))])
def test_idx_round_trip(tmp_path, rng, suffix, dtype, shape):
    arr = (rng.standard_normal(shape) * 50).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, arr)


def test_idx_reader_on_hand_built_file(tmp_path):
    # Independent oracle: the format written by hand with struct (big-endian dims, type 0x08).
    pixels = bytes(range(24))
    raw = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 2, 3, 4) + pixels
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as f:
        f.write(raw)
    out = read_idx(tmp_path / "x-idx3-ubyte.gz")
    np.testing.assert_array_equal(out, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    # and the writer produces exactly these bytes
    write_idx(tmp_path / "y.idx", out)
    assert (tmp_path / "y.idx").read_bytes() == raw
    f32 = struct.pack(">BBBB", 0, 0, 0x0D, 1) + struct.pack(">I", 2) + struct.pack(">ff", 1.5, -2.0)
    (tmp_path / "f.idx").write_bytes(f32)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), np.array([1.5, -2.0], dtype=np.float32))


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an idx"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 5) + b"\x00")
    with pytest.raises(ValueError, match="implies"):
        read_idx(tmp_path / "short")
    (tmp_path / "code").write_bytes(struct.pack(">BBBB", 0, 0, 0x07, 1) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="type code"):
        read_idx(tmp_path / "code")
    with pytest.raises(TypeError, match="idx"):
        write_idx(tmp_path / "c.idx", np.zeros(2, dtype=np.complex64))


def test_digits_splits():
    d = load_digits_data(seed=3)
    assert (len(d.train), len(d.val), len(d.test)) == (1437, 180, 180)
    assert d.train.input_shape == (64,) and d.num_classes == 10
    for part in (d.train, d.val, d.test):
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0
    # the three splits partition the 1,797 images: no sample appears twice
    rows = {tuple(r) for part in (d.train, d.val, d.test) for r in part.x.mul(16).round().int().tolist()}
    from sklearn.datasets import load_digits

    assert len(rows) == len({tuple(r) for r in load_digits().data.astype(int).tolist()})
    again = load_digits_data(seed=3)
    assert torch.equal(again.val.x, d.val.x)
    assert not torch.equal(load_digits_data(seed=4).val.x, d.val.x)


def _write_mnist_like(root, n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        write_idx(root / name, a)
    return arrays


def test_mnist_loader_on_written_files(tmp_path):
    arrays = _write_mnist_like(tmp_path / "mnist")
    d = load_mnist(tmp_path / "mnist", val_fraction=0.2, seed=1, normalize=False)
    assert (len(d.train), len(d.val), len(d.test)) == (24, 6, 10)
    assert d.train.input_shape == (1, 28, 28)
    np.testing.assert_allclose(d.test.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte.gz"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.test.y.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    # train + val is the official training set, each image once
    got = sorted(map(bytes, np.concatenate([d.train.x, d.val.x]).reshape(30, -1).__mul__(255).round()
                     .astype(np.uint8)))
    assert got == sorted(map(bytes, arrays["train-images-idx3-ubyte.gz"].reshape(30, -1)))
    norm = load_mnist(tmp_path / "mnist", val_fraction=0.2, seed=1)
    torch.testing.assert_close(norm.test.x, (d.test.x - 0.1307) / 0.3081)
    with pytest.raises(FileNotFoundError):
        load_mnist(tmp_path / "nothing")
    with pytest.raises(ValueError, match="data-root"):
        load_dataset("mnist")


def test_cifar10_loader_on_written_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, 4).tolist()}
        with open(root / name, "wb") as f:
            pickle.dump(batches[name], f)
    d = load_cifar10(tmp_path, val_fraction=0.1, seed=0, normalize=False)
    assert len(d.train) + len(d.val) == 20 and len(d.test) == 4
    assert d.test.input_shape == (3, 32, 32)
    np.testing.assert_allclose(d.test.x.numpy().reshape(4, -1), batches["test_batch"][b"data"] / 255.0, rtol=1e-6)
    assert d.test.y.tolist() == batches["test_batch"][b"labels"]


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="Debian fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    d = load_fashion_mnist()
    assert (len(d.train), len(d.val), len(d.test)) == (54000, 6000, 10000)
    assert d.train.input_shape == (1, 28, 28) and d.num_classes == 10
    assert sorted(torch.unique(d.test.y).tolist()) == list(range(10))
    assert abs(float(d.train.x.mean())) < 0.05 and abs(float(d.train.x.std()) - 1) < 0.05


def _toy(n=10):
    return ArrayDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 3, 3)


def test_loader_is_seeded_and_covers_each_pass():
    a, b, c = Loader(_toy(), 3, seed=5), Loader(_toy(), 3, seed=5), Loader(_toy(), 3, seed=6)
    xs_a = [x.flatten().tolist() for x, _ in a.take(9)]
    assert xs_a == [x.flatten().tolist() for x, _ in b.take(9)]
    assert xs_a != [x.flatten().tolist() for x, _ in c.take(9)]
    assert all(len(x) == 3 for x in xs_a)
    # with drop_last each pass of 3 batches holds 9 distinct samples
    for p in range(3):
        assert len(set(sum(xs_a[3 * p:3 * p + 3], []))) == 9
    full = Loader(_toy(), 4, seed=0, drop_last=False)
    seen = sum((x.flatten().tolist() for x, _ in full.epoch()), [])
    assert sorted(seen) == list(range(10))
    labels_match = all(torch.equal(y, x.flatten().long() % 3) for x, y in Loader(_toy(), 4, seed=1).take(5))
    assert labels_match
    assert [len(y) for _, y in eval_batches(_toy(), 4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="batch_size"):
        Loader(_toy(), 0)
    with pytest.raises(ValueError, match="fewer"):
        Loader(_toy(), 11)
