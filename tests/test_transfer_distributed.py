"""Data-parallel transfer on torch.distributed: 2 gloo processes against 1 process.

Two worker processes (``distributed_worker.py``) run every case on one global batch split over
the ranks; the oracle is the same transfer in this process without a process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch built without torch.distributed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker as worker  # noqa: E402

from trajtransfer.core.factored import factored_pays  # noqa: E402
from trajtransfer.method.distributed import Distributed, shard_bounds  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402

WORLD = 2
#: Seconds the two ranks may take (importing torch, five small transfers) on a busy machine.
TIMEOUT = 600


def _python_path() -> str:
    import trajtransfer

    package_root = str(Path(trajtransfer.__file__).resolve().parents[1])
    return os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The saved problem and each rank's results."""
    tmp = tmp_path_factory.mktemp("dist")
    setup = worker.save_setup(str(tmp / "setup.pt"))
    env = dict(os.environ, PYTHONPATH=_python_path(), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, worker.__file__, str(tmp / "setup.pt"),
                               str(tmp / f"out{r}.pt"), str(tmp / "store"), str(r), str(WORLD)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-4000:]}"
    return setup, [torch.load(tmp / f"out{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(worker.CASES))
def test_two_processes_give_the_one_process_transfer(run, name):
    setup, outs = run
    model, traj, target_init, data = worker.problem(setup)
    one = transfer(model, traj, target_init, data, eval_data=None, num_threads=1, seed=5,
                   **worker.CASES[name])
    for out in outs:
        got = out["cases"][name]
        assert got["world_size"] == WORLD and got["num_gradient_pairs"] == one.num_gradient_pairs
        assert len(got["perms"]) == len(one.perms)
        for mine, theirs in zip(got["perms"], one.perms):
            assert mine.keys() == theirs.keys()
            for g in theirs:
                assert torch.equal(mine[g], theirs[g]), (name, g)
        for n, v in one.final_params.items():
            torch.testing.assert_close(got["final_params"][n], v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["objective"], one.objective, rtol=1e-4)
        t = got["timings"]
        assert t["communication"] > 0 and t["gradients"] > 0
        assert t["overhead"] == pytest.approx(t["total"] - t["gradients"] - t["matching"]
                                              - t["evaluation"] - t["communication"])


def test_sharded_pair_is_the_full_batch_pair(run):
    """Dense gradients all-reduced and factor rows gathered equal one process's full minibatch."""
    setup, outs = run
    one_t, one_s = worker.one_pair(setup, None)
    for out in outs:
        for mine, theirs in zip(out["pair"], (one_t, one_s)):
            assert mine.keys() == theirs.keys()
            for n, g in theirs.items():
                if hasattr(g, "delta") and factored_pays(g.rows, g.shape[0], g.shape[1]):
                    # kept as factors: the same rows, in the same order
                    delta, inputs = mine[n]
                    assert delta.shape == g.delta.shape and delta.shape[0] == worker.PAIR_BATCH
                    torch.testing.assert_close(delta, g.delta, rtol=1e-5, atol=1e-8)
                    torch.testing.assert_close(inputs, g.inputs, rtol=0, atol=0)
                else:  # summed, factors that do not pay made dense first
                    dense = g.dense() if hasattr(g, "delta") else g
                    torch.testing.assert_close(mine[n], dense, rtol=1e-5, atol=1e-7)
    kinds = [hasattr(g, "delta") and factored_pays(g.rows, g.shape[0], g.shape[1])
             for g in one_t.values() if hasattr(g, "delta")]
    assert any(kinds) and not all(kinds)  # both ways of combining factors are exercised


def test_minibatch_smaller_than_the_group_is_refused(run):
    for out in run[1]:
        assert f"batch_size={WORLD - 1} is smaller than the {WORLD} ranks" in out["small_batch_error"]


def test_ranks_given_different_arguments_are_refused_on_every_rank(run):
    for out in run[1]:
        assert "ranks were given different seed" in out["mismatch_error"]


def test_ranks_given_their_own_part_of_the_data_are_refused(run):
    for out in run[1]:
        assert "ranks were given different data" in out["presharded_error"]


def test_jobs_are_spread_over_the_ranks_and_gathered(run):
    outs = run[1]
    assigned = [out["assigned"] for out in outs]
    assert assigned == [list(range(r, 5, WORLD)) for r in range(WORLD)]
    for out in outs:
        assert out["gathered"] == [j * j for j in range(5)]


@pytest.mark.parametrize("size", [2, 3, 17, 33, 128])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_bounds_split_like_array_split(size, world):
    expected = np.array_split(np.arange(size), world)
    for r in range(world):
        start, stop = shard_bounds(size, world, r)
        assert list(range(start, stop)) == expected[r].tolist()


def test_uninitialised_group_is_refused():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="init_process_group"):
        Distributed()
    model, traj, target_init, data = worker.problem(_tiny_setup())
    with pytest.raises(ValueError, match="init_process_group"):
        transfer(model, traj, target_init, data, steps=2, distributed=True, num_threads=1)
    with pytest.raises(TypeError, match="distributed must be"):
        transfer(model, traj, target_init, data, steps=2, distributed="gloo", num_threads=1)


def _tiny_setup() -> dict:
    """An untrained problem of the workers' shapes (the checks fail before any gradient)."""
    src, tgt = worker.wide_tanh_mlp(1), worker.wide_tanh_mlp(2)
    return {"x": torch.randn(64, 64), "y": torch.randint(0, 10, (64,)), "num_classes": 10,
            "src_init": src.state_dict(), "src_final": src.state_dict(),
            "target_init": tgt.state_dict()}


def test_demo_under_torchrun_matches_one_process(tmp_path):
    """The documented launcher: torchrun, 2 gloo ranks, rank 0 checks itself against 1 process."""
    env = dict(os.environ, PYTHONPATH=_python_path(), OMP_NUM_THREADS="1")
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
         "-m", "trajtransfer.kit.distributed_demo", "--hidden", "32", "--steps", "3", "--threads", "1",
         "--check", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "same permutations at all 3 steps" in proc.stdout
    res = json.loads(out.read_text())
    assert res["config"]["world_size"] == WORLD and res["check"]["same_permutations"]
    assert res["timings"]["communication"] > 0


def test_transfer_many_spread_over_ranks_gives_the_one_process_ensemble(run):
    """Members r, r + W, ... on rank r: every rank returns all members, each equal to its single
    transfer, and the ensemble's accuracy from probabilities summed over the ranks."""
    from trajtransfer.method.transfer_many import transfer_many

    setup, outs = run
    model, traj, _, data = worker.problem(setup)
    options = {k: v for k, v in worker.MANY.items() if k != "distributed"}
    one = transfer_many(model, traj, worker.many_inits(), data, eval_data=data, **options)
    for out in outs:
        got = out["many"]
        assert len(got["perms"]) == len(one.members) == 3
        for mine, member in zip(got["perms"], one.members):
            for p_mine, p_one in zip(mine, member.perms):
                for g in p_one:
                    assert torch.equal(p_mine[g], p_one[g].cpu()), g
        assert got["member_accuracy"] == one.member_accuracy
        # summed in another order: at most one near-tie vote may differ
        np.testing.assert_allclose(got["accuracy"], one.accuracy, atol=1.0 / len(data) + 1e-12)
        # each rank computes the source gradients its own members need
        assert got["num_source_gradients"] == WORLD * one.num_source_gradients
