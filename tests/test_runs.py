"""persona.runs: atomic files, checkpoints, optimizer state round trip, torn metrics lines."""

import json

import pytest
import torch

from persona.runs import (RunDir, atomic_write_json, load_optimizer_tensors, load_tensors, optimizer_tensors,
                          prefixed, save_tensors, unprefixed)


def test_tensors_round_trip_with_meta(tmp_path):
    path = tmp_path / "a.safetensors"
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    save_tensors(path, tensors, {"step": 7})
    loaded, meta = load_tensors(path)
    assert meta == {"step": 7}
    assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["b"], tensors["b"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_checkpoint_says_which(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_tensors(tmp_path / "nope.safetensors")


def test_prefix_round_trip():
    state = {"a": torch.zeros(1), "b.c": torch.ones(2)}
    both = {**prefixed("enc", state), **prefixed("dec", {"a": torch.ones(1)})}
    assert set(unprefixed("enc", both)) == {"a", "b.c"}


def test_optimizer_state_round_trip():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    tensors, rest = optimizer_tensors(opt)
    rest = json.loads(json.dumps(rest))  # must survive JSON
    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    load_optimizer_tensors(opt2, tensors, rest)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt2.state_dict()["state"][0][k]))


def test_run_dir_keeps_newest_checkpoints_and_skips_torn_lines(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config({"method": "x"})
    for step in (10, 20, 30):
        run.save_checkpoint(step, {"w": torch.full((1,), float(step))}, keep=2)
        run.log(step, loss=1.0 / step)
    assert [s for s, _ in run.list_checkpoints()] == [20, 30]
    assert run.latest_checkpoint()[0] == 30
    with open(run.root / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "lo')  # a line torn by kill -9
    assert [r["step"] for r in run.metrics()] == [10, 20, 30]
    run.truncate_metrics(20)
    assert [r["step"] for r in run.metrics()] == [10, 20]
    assert run.read_config() == {"method": "x"}


def test_stray_temp_file_is_not_a_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint(5, {"w": torch.ones(1)})
    (run.checkpoints / ".step_00000009.safetensors.abc.tmp").write_bytes(b"half")
    assert run.latest_checkpoint()[0] == 5


def test_atomic_json_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "c.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}


def test_staged_dir_replaces_on_success_and_leaves_nothing_on_error(tmp_path):
    from persona.runs import staged_dir

    dest = tmp_path / "out"
    with staged_dir(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (dest / "a.txt").read_text() == "first"
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(dest) as tmp:
            (tmp / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert (dest / "a.txt").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with staged_dir(dest) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_training_state_round_trip_and_old_optim_key():
    """training_state/restore_training_state: optimiser + RNG come back; checkpoints written with the
    old key 'optim' (ours, the NeRF baselines, SyncNet before #14) still resume."""
    from persona.errors import PersonaFileError
    from persona.runs import optimizer_tensors, prefixed, restore_training_state, rng_tensors, training_state

    def stepped():
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.Adam([p], lr=0.1)
        p.sum().backward()
        opt.step()
        return p, opt

    _, opt = stepped()
    tensors, meta = training_state(opt)
    assert set(meta) == {"optimizer"} and any(k.startswith("optimizer.") for k in tensors) and "rng.torch" in tensors
    old_t, old_rest = optimizer_tensors(opt)
    old = ({**prefixed("optim", old_t), **rng_tensors()}, {"optimizer": old_rest})  # ours' old layout
    for saved, saved_meta in ((tensors, meta), old):
        p2 = torch.nn.Parameter(torch.ones(3))
        fresh = torch.optim.Adam([p2], lr=0.1)
        restore_training_state(saved, saved_meta, fresh, "ckpt")
        assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    nerf_old = ({**prefixed("optim", old_t), **rng_tensors()}, {"optim": old_rest})  # the NeRF baselines' old layout
    restore_training_state(*nerf_old, torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1), "ckpt")
    with pytest.raises(PersonaFileError, match="optimizer"):
        restore_training_state(tensors, {}, torch.optim.Adam([torch.nn.Parameter(torch.ones(3))]), "ckpt.json")
