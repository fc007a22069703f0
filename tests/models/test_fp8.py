"""precision: amp_fp8 (llmtrain/models/fp8.py): which layers become float8, that a run trains and its
checkpoint is an ordinary one, and the one-line errors. On CPU through torchao's emulation (fp8.emulate);
the real FP8 GEMMs in the gpu test."""
import subprocess
import sys

import pytest
import torch
import transformers

from llmtrain.hf_export import convert_to_hf
from llmtrain.config import Fp8Config
from llmtrain.errors import UserError
from llmtrain.models import fp8
from tests.models.conftest import tiny_model, token_batch
from tests.test_train import ROOT, shards, train  # noqa: F401  (shards: the fixture)

torchao = pytest.importorskip("torchao")
from torchao.float8.float8_linear import Float8Linear  # noqa: E402


def test_only_the_blocks_linears_become_float8_and_the_weights_keep_their_names_and_dtypes():
    model = tiny_model(d_model=64, n_heads=4, n_layers=2)
    before = {k: (v.dtype, v.shape) for k, v in model.state_dict().items()}
    converted = fp8.convert(model, Fp8Config(emulate=True), fsdp=False)
    assert sorted(converted) == sorted(f"transformer.blocks.{i}.{name}" for i in range(2)
                                       for name in ("attn.Wqkv", "attn.out_proj", "ffn.up_proj", "ffn.down_proj"))
    assert all(isinstance(model.get_submodule(name), Float8Linear) for name in converted)
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight is model.transformer.wte.weight
    assert {k: (v.dtype, v.shape) for k, v in model.state_dict().items()} == before


@pytest.mark.parametrize("fast_accum", [False, True])
def test_fast_accum_reaches_the_gradient_gemms(fast_accum):
    model = tiny_model(d_model=64, n_heads=4, n_layers=1)
    fp8.convert(model, Fp8Config(emulate=True, fast_accum=fast_accum), fsdp=False)
    config = model.transformer.blocks[0].ffn.up_proj.config
    assert config.gemm_config_output.use_fast_accum  # torchao's default for the forward GEMM
    assert config.gemm_config_grad_input.use_fast_accum is fast_accum
    assert config.gemm_config_grad_weight.use_fast_accum is fast_accum


def test_emulated_fp8_step_is_close_to_the_high_precision_step():
    batch = token_batch()
    losses, grads = {}, {}
    for name in ("fp32", "fp8"):
        torch.manual_seed(0)
        model = tiny_model(d_model=64, n_heads=4, n_layers=2)
        if name == "fp8":
            fp8.convert(model, Fp8Config(emulate=True), fsdp=False)
        out = model(batch["input_ids"], labels=batch["labels"])
        out.loss.backward()
        losses[name], grads[name] = out.loss.item(), model.transformer.blocks[0].ffn.up_proj.weight.grad
    assert losses["fp8"] == pytest.approx(losses["fp32"], rel=1e-2)
    assert losses["fp8"] != losses["fp32"]  # float8 rounding happened
    cos = torch.nn.functional.cosine_similarity(grads["fp8"].flatten(), grads["fp32"].flatten(), dim=0)
    assert cos > 0.95  # e5m2 gradients: 2 mantissa bits


def test_fp8_run_trains_and_its_checkpoint_loads_without_fp8(tmp_path, shards):
    fp8_args = ["precision=amp_fp8", "fp8.emulate=true", "max_duration=6ba", "model.d_model=64", "model.n_heads=4"]
    records = train(fp8_args, tmp_path / "fp8", shards)
    assert records[-1]["loss"] < records[0]["loss"]
    checkpoint = tmp_path / "fp8" / "checkpoints" / "ep0-ba6-rank0.pt"
    # an ordinary run resumes it: same keys and dtypes, no float8 state
    resumed = train(["max_duration=8ba", f"load_path={checkpoint}", "model.d_model=64", "model.n_heads=4",
                     "save_folder=null"], tmp_path / "bf16", shards)
    assert [r["step"] for r in resumed] == [7, 8]
    out = tmp_path / "hf"
    convert_to_hf(str(checkpoint), str(out))
    stock = transformers.MptForCausalLM.from_pretrained(out)
    assert torch.isfinite(stock(torch.tensor([[1, 2, 3]])).logits).all()


def test_fp8_without_an_fp8_gpu_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "scripts/train.py", "yamls/tiny.yaml", "precision=amp_fp8", "device=cpu",
                           f"run_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: precision: amp_fp8 needs a CUDA GPU")
    with pytest.raises(UserError, match="amp_fp8 needs a CUDA GPU"):
        fp8.check_supported("cpu", Fp8Config())
    fp8.check_supported("cpu", Fp8Config(emulate=True))  # emulation runs anywhere


@pytest.mark.gpu
def test_gpu_fp8_gemms_train_like_bf16():
    gpu = torch.device("cuda")
    overrides = dict(d_model=256, n_heads=4, n_layers=2, vocab_size=512, max_seq_len=256, no_bias=True)
    ids = torch.randint(0, 512, (4, 256), device=gpu, generator=torch.Generator(gpu).manual_seed(0))
    losses = {}
    for name in ("bf16", "fp8"):
        torch.manual_seed(0)
        model = tiny_model(**overrides).to(gpu)
        if name == "fp8":
            fp8.convert(model, Fp8Config(), fsdp=False)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(30):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        losses[name] = loss.item()
    assert losses["bf16"] < 5.0  # it learnt the batch
    assert losses["fp8"] == pytest.approx(losses["bf16"], rel=0.1)
