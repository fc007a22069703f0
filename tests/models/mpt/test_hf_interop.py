"""Parity with stock transformers.MptForCausalLM, both directions of conversion (fp32, CPU)."""
import pytest
import torch
import transformers

from llmtrain.errors import UserError
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.hf_interop import export_hf, load_hf
from llmtrain.models.mpt.modeling import MPTForCausalLM

TOL = 1e-5
VOCAB, SEQ = 320, 48

# MPT-7B's shape (ALiBi, no biases, tied embeddings), scaled down; 6 heads exercises ALiBi's
# non-power-of-two slope order.
CASES = {
    "mpt7b_small": dict(d_model=128, n_heads=4, n_layers=3),
    "mpt7b_small_6_heads": dict(d_model=96, n_heads=6, n_layers=2),
    "clip_qkv": dict(d_model=64, n_heads=4, n_layers=2, attn_config={"clip_qkv": 0.5}),
    "softmax_scale_untied": dict(d_model=64, n_heads=4, n_layers=2, tie_word_embeddings=False,
                                 attn_config={"softmax_scale": 0.3}),
}


def ours(**overrides) -> MPTForCausalLM:
    attn = {"alibi": True, "attn_impl": "torch", **overrides.pop("attn_config", {})}
    config = MPTConfig(**{"vocab_size": VOCAB, "max_seq_len": SEQ, "no_bias": True, "attn_config": attn, **overrides})
    return MPTForCausalLM(config).eval()


def inputs(batch=2, seq=SEQ):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", CASES)
def test_export_then_stock_loads_same_logits(case, tmp_path):
    torch.manual_seed(0)
    model = ours(**CASES[case])
    export_hf(model, tmp_path)
    stock = transformers.MptForCausalLM.from_pretrained(tmp_path).eval()
    x = inputs()
    with torch.no_grad():
        diff = (stock(x).logits - model(x).logits).abs().max().item()
        assert model(x).logits.abs().max() > 1  # not a trivially small comparison
    assert diff <= TOL


def _randomise(model):
    # Stock init (std 0.02) gives near-uniform logits; larger random weights make the check meaningful.
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(1 + noise if "norm" in name else noise)


@pytest.mark.parametrize("case", CASES)
def test_stock_checkpoint_loads_same_logits(case, tmp_path):
    shape = dict(CASES[case])
    attn = shape.pop("attn_config", {})
    stock_config = transformers.MptConfig(vocab_size=VOCAB, max_seq_len=SEQ, expansion_ratio=4,
                                          attn_config={"alibi": True, **attn}, **shape)
    stock = transformers.MptForCausalLM(stock_config).eval()
    _randomise(stock)
    stock.save_pretrained(tmp_path)
    model = MPTForCausalLM.from_pretrained(tmp_path).eval()
    x = inputs()
    with torch.no_grad():
        diff = (stock(x).logits - model(x).logits).abs().max().item()
    assert diff <= TOL


def test_left_padded_batch_matches_stock(tmp_path):
    torch.manual_seed(0)
    model = ours(**CASES["mpt7b_small"])
    export_hf(model, tmp_path)
    stock = transformers.MptForCausalLM.from_pretrained(tmp_path).eval()
    x = inputs(seq=16)
    mask = torch.ones_like(x)
    mask[0, :5] = 0
    with torch.no_grad():
        ours_logits, stock_logits = model(x, attention_mask=mask).logits, stock(x, attention_mask=mask).logits
    real = mask.bool()
    assert (ours_logits[real] - stock_logits[real]).abs().max().item() <= TOL


def test_learned_positions_round_trip_but_refuse_stock_export(tmp_path):
    # Stock MPT always runs ALiBi and has no position table, so this model has no stock equivalent.
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=SEQ,
                                     learned_pos_emb=True, no_bias=True,
                                     attn_config={"attn_impl": "torch"})).eval()
    with pytest.raises(UserError, match=r"^model\.attn_config\.alibi: .*ALiBi"):
        export_hf(model, tmp_path / "stock")
    model.save_pretrained(tmp_path / "own")
    loaded = MPTForCausalLM.from_pretrained(tmp_path / "own").eval()
    assert loaded.config.learned_pos_emb
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


@pytest.mark.parametrize("overrides, key", [
    (dict(no_bias=False), "no_bias"),
    (dict(expansion_ratio=2), "expansion_ratio"),
    (dict(norm_type="rmsnorm"), "norm_type"),
    (dict(logit_scale=0.5), "logit_scale"),
    (dict(attn_config={"qk_ln": True}), "attn_config.qk_ln"),
    (dict(attn_config={"alibi_bias_max": 16}), "attn_config.alibi_bias_max"),
    (dict(attn_config={"attn_type": "grouped_query_attention", "kv_n_heads": 2}), "attn_config.attn_type"),
    (dict(attn_config={"alibi": False, "rope": True}), "attn_config.alibi"),
])
def test_export_refuses_what_stock_cannot_run(overrides, key, tmp_path):
    base = dict(d_model=32, n_heads=4, n_layers=1)
    model = ours(**{**base, **overrides})
    with pytest.raises(UserError, match=rf"^model\.{key}: cannot export"):
        export_hf(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_text_generation_pipeline_runs_on_export(tmp_path):
    import json

    from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer

    tokenizer = build_tokenizer(NEOX_NAME)
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=50432, max_seq_len=64,
                                     no_bias=True, attn_config={"alibi": True})).eval()
    export_hf(model, tmp_path, tokenizer=tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "mpt" and config["architectures"] == ["MptForCausalLM"]
    assert "auto_map" not in config and (tmp_path / "tokenizer.json").exists()

    pipe = transformers.pipeline("text-generation", model=str(tmp_path), device="cpu")
    assert type(pipe.model) is transformers.MptForCausalLM
    prompt = "The quick brown fox"
    text = pipe(prompt, max_new_tokens=6, do_sample=False)[0]["generated_text"]
    assert text.startswith(prompt)

    # The pipeline's greedy continuation is our model's.
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(6):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert text == tokenizer.decode(ids[0])


def test_bf16_export_loads_as_bf16(tmp_path):
    torch.manual_seed(0)
    model = ours(**CASES["mpt7b_small"])
    export_hf(model, tmp_path, dtype=torch.bfloat16)
    stock = transformers.MptForCausalLM.from_pretrained(tmp_path, dtype="auto")
    assert stock.transformer.wte.weight.dtype == torch.bfloat16
    assert torch.equal(stock.transformer.wte.weight, model.transformer.wte.weight.bfloat16())
