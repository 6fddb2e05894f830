"""Trajectories: λ schedules, linear interpolation between checkpoints, file round trips."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trajtransfer.method.trajectory import Trajectory, TrajectoryRecorder, lambda_schedule  # noqa: E402


def _cosine_reference(n: int) -> list:
    """λ_idx = Σ_{t<idx}(1+cos(πt/n)) / Σ_{t<n}(1+cos(πt/n)), written out with plain loops."""
    incr = [1.0 + math.cos(math.pi * t / n) for t in range(n)]
    total = sum(incr)
    return [sum(incr[:idx]) / total for idx in range(n + 1)]


def test_cosine_schedule_matches_spec_values():
    lam = lambda_schedule(30, "cosine")
    assert lam.shape == (31,)
    assert lam[0] == 0.0 and lam[30] == 1.0
    assert lam[1] == pytest.approx(2 / 31, abs=1e-15)
    assert lam[10] == pytest.approx(0.5972, abs=5e-5)
    for idx, ref in [(5, 0.317), (15, 0.808), (20, 0.936), (25, 0.990), (28, 0.9991)]:
        assert lam[idx] == pytest.approx(ref, abs=5e-4)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 15, 30, 40])
def test_cosine_schedule_against_loop_reference(n):
    np.testing.assert_allclose(lambda_schedule(n, "cosine"), _cosine_reference(n), rtol=0, atol=1e-14)
    lam = lambda_schedule(n, "cosine")
    assert np.all(np.diff(lam) > 0)
    if n >= 2:  # the denominator is n + 1 (algorithm-spec §2.2)
        assert sum(1 + math.cos(math.pi * t / n) for t in range(n)) == pytest.approx(n + 1)


@pytest.mark.parametrize("n", [1, 3, 10])
def test_uniform_schedule_is_idx_over_n(n):
    assert lambda_schedule(n, "uniform").tolist() == [i / n for i in range(n + 1)]


@pytest.mark.parametrize("bad", [0, -2])
def test_schedule_rejects_bad_n(bad):
    with pytest.raises(ValueError, match="num_splits"):
        lambda_schedule(bad)
    with pytest.raises(ValueError, match="kind"):
        lambda_schedule(3, "linear")


def _ckpt(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g),
            "count": torch.tensor(seed, dtype=torch.long)}


@pytest.mark.parametrize("schedule", ["uniform", "cosine"])
def test_points_interpolate_each_segment(schedule):
    cks = [_ckpt(1), _ckpt(2), _ckpt(3)]
    n = 4
    traj = Trajectory(cks, num_splits=n, schedule=schedule)
    assert len(traj) == 2 * n + 1 and traj.num_steps == 2 * n
    lam = lambda_schedule(n, schedule)
    for k in range(len(traj)):
        seg = max(0, (k - 1) // n)
        idx = k - seg * n
        a, b = cks[seg], cks[seg + 1]
        expect = a["w"] + float(lam[idx]) * (b["w"] - a["w"]) if k else cks[0]["w"]
        torch.testing.assert_close(traj[k]["w"], expect, rtol=0, atol=1e-6)
        torch.testing.assert_close(traj.displacement(k)["w"], traj[k]["w"] - cks[0]["w"], rtol=0, atol=0)
        assert "count" not in traj.displacement(k)  # integer buffers have no displacement
    # checkpoints themselves are points n and 2n, bit for bit; integer tensors follow the segment end
    assert torch.equal(traj[n]["w"], cks[1]["w"]) and torch.equal(traj[2 * n]["b"], cks[2]["b"])
    assert int(traj[1]["count"]) == 2 and int(traj[0]["count"]) == 1
    assert torch.equal(traj[-1]["w"], cks[2]["w"])
    with pytest.raises(IndexError):
        traj[len(traj)]


def test_points_are_fresh_copies():
    cks = [_ckpt(1), _ckpt(2)]
    traj = Trajectory(cks, num_splits=1)
    traj[1]["w"].zero_()
    assert torch.equal(traj[1]["w"], cks[1]["w"])


def test_with_splits_resplits_the_same_checkpoints():
    traj = Trajectory([_ckpt(1), _ckpt(2)], num_splits=2).with_splits(6, "cosine")
    assert traj.num_steps == 6 and traj.schedule == "cosine"
    torch.testing.assert_close(traj[6]["w"], _ckpt(2)["w"])


def test_mismatched_checkpoints_raise():
    bad = _ckpt(2)
    bad["w"] = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="shape"):
        Trajectory([_ckpt(1), bad], num_splits=2)[1]
    missing = _ckpt(2)
    del missing["b"]
    with pytest.raises(ValueError, match="keys"):
        Trajectory([_ckpt(1), missing])[1]
    with pytest.raises(ValueError, match="at least 2"):
        Trajectory([_ckpt(1)])


def test_recorder_round_trip_matches_in_memory(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2))
    rec = TrajectoryRecorder(tmp_path / "run")
    states = []
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for epoch in range(-1, 3):
        if epoch >= 0:
            opt.zero_grad()
            model(torch.randn(8, 3)).pow(2).mean().backward()
            opt.step()
        rec.save(model, epoch)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert rec.epochs == [-1, 0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "epoch_-1.pt", "epoch_0.pt", "epoch_1.pt", "epoch_2.pt"]
    # weights only: a plain dict of tensors loadable with weights_only=True
    loaded = torch.load(tmp_path / "run" / "epoch_1.pt", weights_only=True)
    assert set(loaded) == set(model.state_dict())

    disk = rec.trajectory(num_splits=3, schedule="cosine")            # ends: [-1, 2]
    mem = Trajectory([states[0], states[-1]], num_splits=3, schedule="cosine")
    assert disk.labels == [-1, 2] and len(disk) == len(mem) == 4
    for k in range(len(mem)):
        for name, v in mem[k].items():
            assert torch.equal(disk[k][name], v), (k, name)
    every = Trajectory.from_dir(tmp_path / "run", epochs="all")
    assert every.num_steps == 3
    for k, s in enumerate(states):
        assert all(torch.equal(every[k][n], s[n]) for n in s)
    with pytest.raises(FileNotFoundError, match=r"\[7\]"):
        Trajectory.from_dir(tmp_path / "run", epochs=[-1, 7])
    with pytest.raises(FileNotFoundError):
        Trajectory.from_dir(tmp_path / "empty")


def test_files_load_lazily(tmp_path):
    rec = TrajectoryRecorder(tmp_path)
    for e, seed in [(-1, 1), (0, 2), (1, 3)]:
        rec.save(_ckpt(seed), e)
    traj = rec.trajectory(epochs="all", num_splits=2)
    assert traj._cache == {}  # nothing read at construction
    traj[1]
    assert set(traj._cache) == {0, 1}
    traj[4]
    assert 0 in traj._cache and 2 in traj._cache


def test_recorder_rejects_bad_epoch(tmp_path):
    with pytest.raises(ValueError, match="epoch"):
        TrajectoryRecorder(tmp_path).save(_ckpt(1), -2)


def _write(directory, names, seed=1):
    directory.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        torch.save(_ckpt(seed + i), directory / name)
    return directory


def test_from_dir_needs_two_distinct_epochs(tmp_path):
    d = _write(tmp_path, ["epoch_-1.pt"])
    with pytest.raises(ValueError, match="at least 2 distinct epochs"):
        Trajectory.from_dir(d)
    _write(tmp_path, ["epoch_3.pt"])
    with pytest.raises(ValueError, match=r"\[3\] requested more than once"):
        Trajectory.from_dir(d, epochs=[-1, 3, 3])
    with pytest.raises(ValueError, match="at least 2 distinct epochs"):
        Trajectory.from_dir(d, epochs=[3])


def test_from_dir_reads_zero_padded_epoch_names(tmp_path):
    d = _write(tmp_path, ["epoch_-1.pt", "epoch_01.pt"])
    traj = Trajectory.from_dir(d, epochs="all")
    assert traj.labels == [-1, 1]
    assert torch.equal(traj[1]["w"], torch.load(d / "epoch_01.pt")["w"])


def test_from_dir_rejects_two_files_for_one_epoch(tmp_path):
    d = _write(tmp_path, ["epoch_-1.pt", "epoch_1.pt", "epoch_001.pt"])
    for call in (lambda: Trajectory.from_dir(d, epochs="all"),
                 lambda: TrajectoryRecorder.saved_epochs(d)):
        with pytest.raises(ValueError, match=r"epoch_001\.pt.*epoch_1\.pt.*epoch 1"):
            call()


class _Opaque:
    pass


def _bad_checkpoint(path, kind):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "junk":
        path.write_bytes(b"not a checkpoint")
    elif kind == "truncated":
        torch.save(_ckpt(9), path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "legacy-truncated":
        torch.save(_ckpt(9), path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "pickled object":  # refused by weights_only loading
        torch.save({"w": _Opaque()}, path)
    elif kind == "non-tensor entry":
        torch.save({"w": torch.zeros(4, 3), "b": 1.0}, path)
    elif kind == "list":
        torch.save([torch.zeros(4, 3)], path)
    elif kind == "other keys":
        torch.save({"w": torch.zeros(4, 3)}, path)
    elif kind == "other shape":
        torch.save({"w": torch.zeros(4, 2), "b": torch.zeros(4), "count": torch.tensor(0)}, path)


_BAD = {"empty": ValueError, "junk": ValueError, "truncated": ValueError,
        "legacy-truncated": ValueError, "pickled object": ValueError,
        "non-tensor entry": TypeError, "list": TypeError, "other keys": ValueError,
        "other shape": ValueError}


@pytest.mark.parametrize("kind", sorted(_BAD))
def test_bad_checkpoint_fails_at_construction_naming_the_file(tmp_path, kind):
    d = _write(tmp_path, ["epoch_-1.pt", "epoch_0.pt"])
    _bad_checkpoint(d / "epoch_1.pt", kind)
    name = str(d / "epoch_1.pt")
    with pytest.raises(_BAD[kind], match=re.escape(repr(name))):
        Trajectory.from_dir(d, epochs="all")
    with pytest.raises(_BAD[kind], match=re.escape(repr(name))):
        Trajectory([d / "epoch_-1.pt", d / "epoch_1.pt"])


def test_map_location_reaches_torch_load(tmp_path):
    d = _write(tmp_path, ["epoch_-1.pt", "epoch_0.pt"])
    seen = []

    def to_cpu(storage, location):
        seen.append(location)
        return storage

    traj = Trajectory.from_dir(d, map_location=to_cpu)
    seen.clear()  # the construction-time check maps to the CPU itself
    traj[1]
    assert seen and all(loc == "cpu" for loc in seen)
    rec = TrajectoryRecorder(d).trajectory(map_location=torch.device("meta"))
    assert rec[1]["w"].device.type == "meta"
    assert Trajectory([d / "epoch_-1.pt", d / "epoch_0.pt"],
                      map_location="meta").checkpoint(0)["w"].is_meta


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_map_location_loads_onto_the_gpu(tmp_path):
    d = _write(tmp_path, ["epoch_-1.pt", "epoch_0.pt"])
    traj = Trajectory.from_dir(d, num_splits=2, map_location="cuda")
    assert all(v.is_cuda for v in traj[1].values())
    torch.testing.assert_close(traj[2]["w"].cpu(), torch.load(d / "epoch_0.pt")["w"])
