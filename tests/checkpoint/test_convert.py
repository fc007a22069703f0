"""scripts/convert_to_hf.py: a 2-rank sharded checkpoint (local or s3://) and a 1-process full one become
folders that stock transformers.MptForCausalLM loads, with our model's logits."""
import subprocess
import sys

import pytest
import torch
import transformers
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from llmtrain.checkpoint import read_checkpoint
from llmtrain.hf_export import convert_to_hf
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.modeling import MPTForCausalLM
from tests.checkpoint.harness import ROOT, SUBPROCESS_ENV

TOL = 1e-5  # as tests/models/mpt/test_hf_interop.py: stock MPT's ops are not ours, fp32


def trusted_model_weights(checkpoint) -> dict:
    """The model's weights read by torch's own (unrestricted) loaders: what our reader must agree with."""
    if checkpoint.is_dir():
        dcp_to_torch_save(checkpoint, checkpoint.parent / "whole.pt")
        state = torch.load(checkpoint.parent / "whole.pt", weights_only=False)["state"]
    else:
        state = torch.load(checkpoint, weights_only=False)["state"]
    return state["model"]


def assert_stock_matches_ours(out_dir, checkpoint) -> None:
    weights = trusted_model_weights(checkpoint)
    ours = read_checkpoint(str(checkpoint))
    assert sorted(ours.tensors) == sorted(weights)
    for name, tensor in weights.items():
        assert torch.equal(ours.tensors[name], tensor), name
    model = MPTForCausalLM(MPTConfig(**{k: v for k, v in ours.recipe["model"].items() if k != "name"}))
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items()})
    stock = transformers.MptForCausalLM.from_pretrained(out_dir).eval()
    x = torch.randint(0, 50000, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model.eval()(x).logits, stock(x).logits
    assert want.abs().max() > 1  # trained weights, not a trivially small comparison
    assert (got - want).abs().max() <= TOL
    assert transformers.AutoTokenizer.from_pretrained(out_dir).eos_token == "<|endoftext|>"


@pytest.mark.slow
def test_sharded_checkpoint_of_a_2_rank_run_converts(tmp_path, reference):
    latest = reference / "checkpoints" / "latest-rank0.pt"
    done = subprocess.run([sys.executable, "scripts/convert_to_hf.py", str(latest), str(tmp_path / "hf")],
                          cwd=ROOT, env={**__import__("os").environ, **SUBPROCESS_ENV}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) >= ["config.json", "model.safetensors"]
    assert_stock_matches_ours(tmp_path / "hf", latest.resolve())


def test_full_checkpoint_of_1_process_converts(tmp_path, one_rank_run):
    checkpoint = one_rank_run.dir / "checkpoints" / "ep0-ba6-rank0.pt"
    convert_to_hf(str(checkpoint), tmp_path / "hf")
    assert_stock_matches_ours(tmp_path / "hf", checkpoint)


def test_sharded_checkpoint_converts_from_s3(tmp_path, reference, s3_server):
    local = (reference / "checkpoints" / "latest-rank0.pt").resolve()
    bucket = s3_server.make_bucket()
    for f in local.iterdir():
        s3_server.client().upload_file(str(f), bucket, f"runs/x/checkpoints/{local.name}/{f.name}")
    convert_to_hf(f"s3://{bucket}/runs/x/checkpoints/{local.name}", tmp_path / "from_s3", tokenizer=False)
    convert_to_hf(str(local), tmp_path / "from_disk", tokenizer=False)
    a = transformers.MptForCausalLM.from_pretrained(tmp_path / "from_s3").state_dict()
    b = transformers.MptForCausalLM.from_pretrained(tmp_path / "from_disk").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
