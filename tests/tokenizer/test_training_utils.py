import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tokenizer.quantizers import Codebook
from tokenizer.training_utils import CheckpointManager, ResumableSampler, check_finite, ema_model, update_ema


def test_sampler_shards_are_disjoint_and_positions_restore_exactly():
    ranks = [ResumableSampler(10, seed=1, rank=r, world_size=2) for r in range(2)]
    orders = [list(s) for s in ranks]
    assert len(orders[0]) == len(orders[1]) == 5 and not set(orders[0]) & set(orders[1])
    resumed = ResumableSampler(10, seed=1, rank=0, world_size=2)
    resumed.set_position(0, 3)
    assert list(resumed) == orders[0][3:]
    next_epoch = ResumableSampler(10, seed=1, rank=0, world_size=2)
    next_epoch.set_position(1, 0)
    assert sorted(list(next_epoch) + list(ResumableSampler(10, 1, 1, 2))) != orders[0] + orders[1]


def test_checkpoints_are_rotated_and_latest_points_to_the_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        manager.save(step, {"value": torch.tensor(step)})
    assert [p.name for p in manager.checkpoints()] == ["step-00000002", "step-00000003"]
    assert manager.resolve("latest").name == "step-00000003"
    assert CheckpointManager.load(manager.resolve("latest"), "value") == 3


def test_an_interrupted_save_never_hides_the_last_complete_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(1, {"value": torch.tensor(1)})
    (tmp_path / ".tmp-step-00000002").mkdir()  # a save killed half-way
    (tmp_path / ".tmp-step-00000002" / "value.pt").write_bytes(b"partial")
    assert manager.latest().name == "step-00000001"
    (tmp_path / "latest").write_text("step-00000009\n")  # a pointer to something incomplete
    assert manager.latest().name == "step-00000001"
    manager.save(2, {"value": torch.tensor(2)})
    assert not list(tmp_path.glob(".tmp-*")) and manager.latest().name == "step-00000002"


def test_check_finite_names_step_and_terms():
    check_finite(3, {"a": torch.tensor(1.0)})
    with pytest.raises(FloatingPointError, match=r"step 7: b=\[inf\]"):
        check_finite(7, {"a": torch.tensor(1.0), "b": torch.tensor(float("inf"))})


def test_ema_model_tracks_an_exponential_average():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ema_model(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)  # the first update starts the average at the current weights
    torch.testing.assert_close(ema.module.weight, torch.tensor([[1.0]]))
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, torch.tensor([[1.5]]))  # 0.5 * 1 + 0.5 * 2
    model.register_buffer("count", torch.tensor(7))
    ema = ema_model(model, decay=0.5)
    update_ema(ema, model)
    model.count += 3
    update_ema(ema, model)
    assert ema.module.count.item() == 10  # integer buffers follow the model exactly
    with pytest.raises(ValueError, match="ema decay"):
        ema_model(model, decay=1.0)


def _ema_worker(rank, world_size, store_path, data, result_path):
    store = dist.FileStore(store_path, world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
    torch.manual_seed(0)
    codebook = Codebook(4, 2, use_ema=True, ema_decay=0.5)
    shard = data[rank::world_size]
    codebook.ema_update(shard, codebook.nearest(shard))
    torch.save(codebook.state_dict(), f"{result_path}.{rank}")
    dist.destroy_process_group()


def test_ema_codebook_statistics_are_synchronised_across_processes(tmp_path):
    torch.manual_seed(1)
    data = torch.randn(16, 2)
    mp.spawn(
        _ema_worker, args=(2, str(tmp_path / "store"), data, str(tmp_path / "state")), nprocs=2, join=True
    )
    states = [torch.load(f"{tmp_path / 'state'}.{r}") for r in range(2)]
    torch.manual_seed(0)
    single = Codebook(4, 2, use_ema=True, ema_decay=0.5)
    single.ema_update(data, single.nearest(data))  # one process seeing all the data
    for state in states:
        for key, value in single.state_dict().items():
            torch.testing.assert_close(state[key], value, msg=key)
