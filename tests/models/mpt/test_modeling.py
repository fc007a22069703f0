import math
import time

import pytest
import torch
import torch.nn.functional as F

from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.modeling import LPLayerNorm, LPRMSNorm, MPTForCausalLM, causal_lm_loss
from tests.models.conftest import tiny_model, token_batch

MPT_7B = dict(d_model=4096, n_heads=32, n_layers=32, expansion_ratio=4, vocab_size=50432, max_seq_len=2048,
              no_bias=True, attn_config={"alibi": True}, init_device="meta")


def test_7b_builds_on_meta_with_mpt_7b_parameter_count():
    start = time.time()
    model = MPTForCausalLM(MPTConfig(**MPT_7B))
    assert time.time() - start < 30
    assert all(p.is_meta for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    d, layers = 4096, 32
    assert n == layers * (12 * d * d + 2 * d) + 50432 * d + d  # blocks, tied embedding, norm_f
    assert 6.64e9 < n < 6.7e9  # 6,649,286,656: MPT-7B's "6.7B"


def test_tied_head_is_the_embedding():
    model = tiny_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = tiny_model(tie_word_embeddings=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight


def test_labels_give_shifted_cross_entropy():
    model = tiny_model()
    batch = token_batch()
    out = model(batch["input_ids"], labels=batch["labels"])
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 64), batch["labels"][:, 1:].reshape(-1))
    assert torch.allclose(out.loss, expected)
    assert torch.allclose(causal_lm_loss(out.logits, batch["labels"]), expected)


def _std(t):
    return t.detach().float().std().item()


def test_kaiming_init_with_residual_scaling():
    d, layers = 256, 8
    model = tiny_model(d_model=d, n_heads=4, n_layers=layers, vocab_size=2048)
    block = model.transformer.blocks[0]
    relu_std = math.sqrt(2 / d)
    assert _std(block.attn.Wqkv.weight) == pytest.approx(relu_std, rel=0.05)
    assert _std(block.ffn.up_proj.weight) == pytest.approx(relu_std, rel=0.05)
    assert _std(model.transformer.wte.weight) == pytest.approx(relu_std, rel=0.05)
    residual = math.sqrt(2 * layers)
    assert _std(block.attn.out_proj.weight) == pytest.approx(relu_std / residual, rel=0.05)
    assert _std(block.ffn.down_proj.weight) == pytest.approx(math.sqrt(2 / (4 * d)) / residual, rel=0.05)
    assert torch.all(block.attn.Wqkv.bias == 0) and torch.all(block.norm_1.weight == 1)


@pytest.mark.parametrize("init, std, residual_div", [
    ({"name": "small_init_"}, math.sqrt(2 / (5 * 256)), math.sqrt(2 * 8)),
    ({"name": "neox_init_"}, math.sqrt(2 / (5 * 256)), 8 / math.sqrt(10)),
    ({"name": "baseline_", "init_std": 0.02, "init_div_is_residual": False}, 0.02, 1.0),
])
def test_normal_inits(init, std, residual_div):
    model = tiny_model(d_model=256, n_heads=4, n_layers=8, vocab_size=2048, init_config=init)
    block = model.transformer.blocks[0]
    assert _std(block.attn.Wqkv.weight) == pytest.approx(std, rel=0.05)
    assert _std(block.attn.out_proj.weight) == pytest.approx(std / residual_div, rel=0.05)


def test_embedding_init_overrides():
    model = tiny_model(d_model=256, vocab_size=2048, init_config={"emb_init_std": 0.5})
    assert _std(model.transformer.wte.weight) == pytest.approx(0.5, rel=0.05)
    model = tiny_model(d_model=256, vocab_size=2048, init_config={"emb_init_uniform_lim": [0.0, 0.1]})
    w = model.transformer.wte.weight
    assert 0 <= w.min() and w.max() <= 0.1


@pytest.mark.parametrize("norm_cls", [LPLayerNorm, LPRMSNorm])
def test_low_precision_norm_runs_in_autocast_dtype(norm_cls):
    norm = norm_cls(64)
    x = torch.randn(4, 64)
    assert torch.equal(norm(x), super(norm_cls, norm).forward(x))  # no autocast: the plain norm
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.bfloat16
    if norm_cls is LPLayerNorm:
        expected = F.layer_norm(x.bfloat16(), (64,), norm.weight.bfloat16(), norm.bias.bfloat16())
    else:
        expected = F.rms_norm(x.bfloat16(), (64,), norm.weight.bfloat16())
    assert torch.equal(y, expected)


def test_residual_stream_is_in_the_autocast_dtype():
    """Under autocast the blocks carry a bf16 residual stream, as they do with FSDP's bf16 parameters;
    without autocast it stays fp32. The loss is fp32 either way."""
    model = tiny_model()
    batch = token_batch()
    seen = []
    model.transformer.blocks[0].register_forward_hook(lambda module, args, out: seen.append((args[0].dtype, out.dtype)))
    loss = model(batch["input_ids"], labels=batch["labels"]).loss
    assert seen.pop() == (torch.float32, torch.float32) and loss.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(batch["input_ids"], labels=batch["labels"]).loss
    assert seen.pop() == (torch.bfloat16, torch.bfloat16) and loss.dtype == torch.float32
    loss.backward()
    assert model.transformer.wte.weight.grad.dtype == torch.float32


def test_grouped_and_multiquery_attention_shapes():
    gqa = tiny_model(attn_config={"attn_type": "grouped_query_attention", "kv_n_heads": 2})
    assert gqa.transformer.blocks[0].attn.Wqkv.weight.shape == (32 + 2 * 16, 32)  # q: 4 heads, k/v: 2 heads of 8
    mqa = tiny_model(attn_config={"attn_type": "multiquery_attention"})
    assert mqa.transformer.blocks[0].attn.Wqkv.weight.shape == (32 + 2 * 8, 32)
    for model in (gqa, mqa):
        assert model(token_batch()["input_ids"]).logits.shape == (2, 16, 64)


def test_learned_positions_shift_past_left_padding():
    model = tiny_model().eval()
    ids = token_batch()["input_ids"][:1, :10]
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(padded, attention_mask=mask).logits[:, 3:], model(ids).logits, atol=1e-5)


def test_logit_scale_and_sequence_limit():
    model = tiny_model(logit_scale="inv_sqrt_d_model")
    plain = tiny_model()
    ids = token_batch()["input_ids"]
    assert torch.allclose(model(ids).logits, plain(ids).logits / math.sqrt(32), atol=1e-6)
    with pytest.raises(ValueError, match="exceeds max_seq_len=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_dropout_only_in_training():
    model = tiny_model(resid_pdrop=0.5, emb_pdrop=0.5, attn_config={"attn_pdrop": 0.5})
    ids = token_batch()["input_ids"]
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
