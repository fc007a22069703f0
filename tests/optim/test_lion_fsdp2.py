"""DecoupledLionW on FSDP2 DTensor parameters: 2 ranks (gloo, CPU) end where 1 process ends."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard

from llmtrain.optim import DecoupledLionW
from tests.checkpoint.harness import free_port

STEPS, BATCH, WIDTH = 8, 8, 16


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # float64 so that the two runs' gradients (summed in different orders) cannot flip a sign
    return torch.nn.Sequential(torch.nn.Linear(WIDTH, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).double()


def batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, WIDTH, generator=gen, dtype=torch.float64),
             torch.randn(BATCH, 4, generator=gen, dtype=torch.float64)) for _ in range(STEPS)]


def train(model, rank: int, world: int) -> None:
    opt = DecoupledLionW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    per_rank = BATCH // world
    for x, y in batches():
        x, y = x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = make_model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    train(model, rank, world)
    full = {k: v.full_tensor() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(full, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_fsdp2_matches_one_process(tmp_path):
    out = str(tmp_path / "fsdp2.pt")
    mp.spawn(worker, args=(2, free_port(), out), nprocs=2, join=True)
    sharded = torch.load(out)

    model = make_model()
    train(model, 0, 1)
    single = model.state_dict()
    assert sharded.keys() == single.keys()
    for name in single:
        assert torch.allclose(sharded[name], single[name], rtol=0, atol=1e-12), name
    assert not torch.allclose(single["0.weight"], make_model().state_dict()["0.weight"])
