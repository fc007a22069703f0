"""Run by test_fsdp2.py under `composer -n N`: a tiny MPT through Composer's Trainer with FSDP2.

argv: OUT_JSON INIT_DEVICE DEVICE (cpu: gloo, gpu: NCCL).
- init_device `mixed` (rank 0 real weights, others meta; the CPU path, since Composer's meta-init
  materialises on CUDA only): rank 0 also trains an unsharded copy on the same global batches with
  SGD. Per-rank mean losses over equal token counts make FSDP2's averaged gradients equal the
  single-process ones, so the weights must agree.
- init_device `meta` (GPU): every rank builds on meta and Composer materialises each module through
  MPTForCausalLM.param_init_fn.
Rank 0 writes what it saw as JSON.
"""
import copy
import json
import math
import sys

import torch
from composer import Trainer
from composer.utils import dist
from composer.utils.parallelism import FSDP2Config
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule

from llmtrain.models import build_composer_mpt
from llmtrain.models.mpt.modeling import MPTBlock

STEPS, GLOBAL_BATCH, SEQ, VOCAB, D_MODEL = 3, 4, 32, 128, 64


def reduce_scatter_avg_factor(device: str) -> float:
    """What FSDP2's fp32 gradient reduce-scatter (ReduceOp.AVG) really multiplies the mean by: 1 on
    NCCL; the world size on gloo in torch 2.7, which sums instead (pytorch/pytorch#162338)."""
    out = torch.empty(1, device=device)
    torch.distributed.reduce_scatter_tensor(out, torch.ones(dist.get_world_size(), device=device),
                                            op=torch.distributed.ReduceOp.AVG)
    return out.item()


def full_state(mpt) -> dict:
    return get_model_state_dict(mpt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def main(out_path: str, init_device: str, device: str) -> None:
    dist.initialize_dist(device)
    torch.manual_seed(0)
    model = build_composer_mpt({
        "d_model": D_MODEL, "n_heads": 4, "n_layers": 3, "vocab_size": VOCAB, "max_seq_len": SEQ,
        "no_bias": True, "init_device": init_device,
        "attn_config": {"alibi": True, "attn_uses_sequence_id": True, "attn_impl": "torch"}})
    reference = copy.deepcopy(model) if not next(model.parameters()).is_meta else None

    g = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(STEPS * GLOBAL_BATCH):
        ids = torch.randint(0, VOCAB, (SEQ,), generator=g)
        samples.append({"input_ids": ids, "labels": ids.clone(), "sequence_id": (torch.arange(SEQ) >= 12).long()})
    loader = torch.utils.data.DataLoader(samples, batch_size=GLOBAL_BATCH // dist.get_world_size(),
                                         sampler=dist.get_sampler(samples, shuffle=False))
    trainer = Trainer(
        model=model, train_dataloader=loader, max_duration=f"{STEPS}ba", device=device,
        optimizers=torch.optim.SGD(model.parameters(), lr=0.5),
        parallelism_config={"fsdp": FSDP2Config(activation_checkpointing=True)},
        progress_bar=False, log_to_console=False, seed=0)

    mpt = model.model
    initial = full_state(mpt)
    trainer.fit()
    final = full_state(mpt)
    factor = reduce_scatter_avg_factor("cuda" if device == "gpu" else "cpu")
    if dist.get_global_rank() != 0:
        return

    blocks = [m for m in mpt.modules() if isinstance(m, MPTBlock)]
    wqkv = initial["transformer.blocks.0.attn.Wqkv.weight"]
    seen = {
        "blocks_sharded": [isinstance(b, FSDPModule) for b in blocks],
        "root_sharded": isinstance(mpt, FSDPModule),
        "blocks_checkpointed": [type(w).__name__ for w in mpt.transformer.blocks],
        "still_tied": mpt.lm_head.weight is mpt.transformer.wte.weight,
        "any_meta": any(p.is_meta for p in mpt.parameters()),
        "param_types": sorted({type(p.data).__name__ for p in mpt.parameters()}),
        "reduce_scatter_avg_factor": factor,
        # Kaiming-normal (relu gain) over fan_in = d_model, as param_init_fn sets it.
        "init_wqkv_std_ratio": wqkv.std().item() / math.sqrt(2 / D_MODEL),
        "init_norms_one": all(bool((v == 1).all()) for k, v in initial.items() if "norm" in k),
        "max_change_from_init": max((final[k] - v).abs().max().item() for k, v in initial.items()),
    }
    if reference is not None:
        seen["init_matches_rank0"] = all(torch.equal(initial[k], v) for k, v in reference.model.state_dict().items())
        optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
        for step in range(STEPS):
            batch = torch.utils.data.default_collate(samples[step * GLOBAL_BATCH:(step + 1) * GLOBAL_BATCH])
            (reference.loss(reference(batch), batch) * factor).backward()
            optimizer.step()
            optimizer.zero_grad()
        seen["max_diff_vs_single_process"] = max(
            (final[k] - v).abs().max().item() for k, v in reference.model.state_dict().items())
    with open(out_path, "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
