import json
import random

import numpy as np
import torch

from lmforge.training.checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from lmforge.training.optim import build_optimizer, build_scheduler


def make(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Dropout(0.5), torch.nn.Linear(5, 2))
    opt = build_optimizer(model, 1e-2, 0.01)
    sched = build_scheduler(opt, 0.1, 50, "cosine")
    return model, opt, sched


def step(model, opt, sched):
    loss = model(torch.randn(4, 3)).pow(2).mean()
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()
    return loss.item()


def test_round_trip_resumes_exactly(tmp_path):
    model, opt, sched = make()
    for _ in range(3):
        step(model, opt, sched)
    save_checkpoint(tmp_path / "step-3", model, opt, sched, {"step": 3})
    expected = [step(model, opt, sched) for _ in range(3)] + [random.random(), float(np.random.rand())]

    model2, opt2, sched2 = make(seed=99)
    state = load_checkpoint(tmp_path / "step-3", model2, opt2, sched2)
    got = [step(model2, opt2, sched2) for _ in range(3)] + [random.random(), float(np.random.rand())]
    assert state == {"step": 3}
    assert got == expected
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_only_complete_checkpoints_listed_and_pruned(tmp_path):
    model, opt, sched = make()
    for s in (1, 2, 3):
        save_checkpoint(tmp_path / f"step-{s}", model, opt, sched, {"step": s})
    (tmp_path / ".tmp-step-4-1").mkdir()  # a checkpoint cut off mid-write
    (tmp_path / "step-5").mkdir()  # no trainer_state.json: incomplete
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-1", "step-2", "step-3"]
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-2", "step-3"]
    assert not (tmp_path / ".tmp-step-4-1").exists()


def test_damaged_weights_give_a_one_line_error(tmp_path):
    import pytest

    from lmforge.errors import RunFolderError

    model, opt, sched = make()
    folder = save_checkpoint(tmp_path / "step-1", model, opt, sched, {"step": 1})
    (folder / "model.safetensors").write_text("garbage")
    with pytest.raises(RunFolderError, match="step-1: cannot resume from this checkpoint"):
        load_checkpoint(folder, *make())


def test_flattened_rnn_weights_are_saved_and_loaded_back(tmp_path):
    """cuDNN keeps an LSTM's weights as views of one block; safetensors refuses such views, so
    lmforge saves copies (simulated here on CPU: the same views, made by hand)."""
    from lmforge.training.checkpoint import has_flattened_rnn, independent_state

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LSTM(4, 6, batch_first=True))
    lstm = model[1]
    flat = torch.cat([p.detach().flatten() for p in lstm.parameters()])
    offset = 0
    for p in lstm.parameters():
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    assert has_flattened_rnn(model)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, 1e-3, 0.0)
    sched = build_scheduler(opt, 0, 10, "linear")
    folder = save_checkpoint(tmp_path / "step-1", model, opt, sched, {"step": 1})
    fresh = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LSTM(4, 6, batch_first=True))
    load_checkpoint(folder, fresh, build_optimizer(fresh, 1e-3, 0.0), sched)
    assert all(torch.equal(fresh.state_dict()[k], expected[k]) for k in expected)
    assert not has_flattened_rnn(torch.nn.LSTM(4, 6))


def test_a_checkpoint_verifies_until_a_byte_changes(tmp_path):
    from lmforge.training.checkpoint import CHECKSUMS, verify_checkpoint

    model, opt, sched = make()
    step(model, opt, sched)
    folder = save_checkpoint(tmp_path / "step-1", model, opt, sched, {"step": 1})
    sums = json.loads((folder / CHECKSUMS).read_text())
    assert {"model.safetensors", "optimizer.safetensors", "trainer_state.json"} <= set(sums)
    assert verify_checkpoint(folder) is None
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    assert "model.safetensors does not match" in verify_checkpoint(folder)
    (folder / "rng.json").unlink()
    assert verify_checkpoint(folder) in ("rng.json is missing", "model.safetensors does not match its checksum")


def test_dropping_the_optimizer_keeps_the_checkpoint_valid_and_loadable(tmp_path, caplog):
    from lmforge.training.checkpoint import drop_optimizer_states, verify_checkpoint

    model, opt, sched = make()
    step(model, opt, sched)
    folder = save_checkpoint(tmp_path / "step-1", model, opt, sched, {"step": 1})
    size = (folder / "optimizer.safetensors").stat().st_size
    assert drop_optimizer_states(tmp_path) == size and not (folder / "optimizer.safetensors").exists()
    assert verify_checkpoint(folder) is None
    fresh, fresh_opt, fresh_sched = make(seed=1)
    assert load_checkpoint(folder, fresh, fresh_opt, fresh_sched)["step"] == 1
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
