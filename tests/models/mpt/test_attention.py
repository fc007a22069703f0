import pytest
import torch
from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

from llmtrain.models.mpt.attention import alibi_slopes, apply_rope, build_plan, resolve_backend, rope_cos_sin
from tests.models.conftest import tiny_model, token_batch

DOCS = torch.tensor([[0] * 5 + [1] * 7 + [2] * 4, [0] * 16])  # two rows, three and one documents
# Flex is compared where it trains: compiled on CUDA when there is one, else flex's eager CPU reference,
# forward only (torch >= 2.8 has no flex backward on CPU: training there runs torch, resolve_backend).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPE = dict(d_model=64, n_heads=4)  # head size 16: the smallest compiled flex takes


@pytest.mark.parametrize("n_heads", [1, 4, 6, 12, 32])
def test_alibi_slopes_match_stock_mpt(n_heads):
    # Stock's tensor at key offset -1 is exactly -slope per head.
    stock = -build_mpt_alibi_tensor(n_heads, 2)[:, 0, 0]
    assert torch.equal(alibi_slopes(n_heads), stock)



@pytest.mark.parametrize("n_heads", [1, 4, 6, 12, 32])
def test_flex_score_mod_adds_the_alibi_slopes(n_heads):
    plan = build_plan(attn_impl="flex", batch_size=1, seq_len=4, device=torch.device("cpu"), dropout_p=0.0,
                      n_heads=n_heads, alibi=True, alibi_bias_max=8.0, rope_theta=None, head_dim=8,
                      sequence_id=None, attention_mask=None)
    heads = torch.arange(n_heads)
    bias = plan.score_mod()(torch.zeros(n_heads), 0, heads, torch.tensor(3), torch.tensor(1))
    assert torch.allclose(bias, -2 * alibi_slopes(n_heads, 8.0), rtol=1e-6, atol=0)

def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_cos_sin(16, 8, 10000.0, "cpu")
    q, k = torch.randn(8), torch.randn(8)
    rotated = lambda x: apply_rope(x.expand(1, 1, 16, 8), cos, sin)[0, 0]
    scores = rotated(q) @ rotated(k).T  # scores[i, j] for q at i, k at j
    assert torch.allclose(scores[5, 2], scores[13, 10], atol=1e-5)
    assert torch.allclose(scores[3, 3], scores[0, 0], atol=1e-5)
    assert not torch.allclose(scores[5, 2], scores[5, 3], atol=1e-3)


def test_flash_and_triton_pick_flex_on_cuda_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("flash", cuda, 0.0) == "flex"
    assert resolve_backend("triton", cuda, 0.0) == "triton"
    assert resolve_backend("triton", cuda, 0.0, padded=True) == "flex"  # the kernel has no padding mask
    assert resolve_backend("triton", cpu, 0.0) == "torch"
    assert resolve_backend("flash", cpu, 0.0) == "torch"
    assert resolve_backend("flash", cuda, 0.1) == "torch"  # flex has no attention dropout
    assert resolve_backend("flex", cpu, 0.0) == "flex"
    assert resolve_backend("flex", cpu, 0.0, needs_grad=True) == "torch"  # no flex backward on CPU
    assert resolve_backend("flex", cuda, 0.0, needs_grad=True) == "flex"
    assert resolve_backend("torch", cuda, 0.0) == "torch"


POSITIONS = {
    "alibi": dict(no_bias=True, attn_config={"alibi": True}),
    "learned": dict(),
    "rope_gqa_qkln": dict(attn_config={"rope": True, "attn_type": "grouped_query_attention", "kv_n_heads": 2,
                                       "qk_ln": True, "clip_qkv": 2.0}),
}


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("documents", [False, True])
def test_flex_matches_torch_outputs_and_grads(position, documents):
    overrides = POSITIONS[position]
    attn = {**overrides.get("attn_config", {}), "attn_uses_sequence_id": True}
    models = {impl: tiny_model(**{**SHAPE, **overrides, "attn_config": {**attn, "attn_impl": impl}}).to(DEVICE)
              for impl in ("torch", "flex")}
    models["flex"].load_state_dict(models["torch"].state_dict())
    batch = {k: v.to(DEVICE) for k, v in token_batch().items()}
    sequence_id = DOCS.to(DEVICE) if documents else None
    train = DEVICE.type == "cuda"  # flex has no backward on CPU
    results = {}
    for impl, model in models.items():
        with torch.set_grad_enabled(train):
            out = model(batch["input_ids"], sequence_id=sequence_id, labels=batch["labels"])
        if train:
            out.loss.backward()
        results[impl] = (out.logits, {n: p.grad for n, p in model.named_parameters()})
    (torch_logits, torch_grads), (flex_logits, flex_grads) = results["torch"], results["flex"]
    assert (torch_logits - flex_logits).abs().max().item() < 1e-5
    for name, grad in torch_grads.items() if train else ():
        assert torch.allclose(grad, flex_grads[name], atol=1e-5, rtol=1e-4), name


def test_flex_trains_on_cpu_through_torch_attention():
    # torch >= 2.8 refuses flex's backward on CPU; `attn_impl: flex` still trains there, as torch would.
    models = {impl: tiny_model(**SHAPE, no_bias=True, attn_config={"alibi": True, "attn_uses_sequence_id": True,
                                                                    "attn_impl": impl}) for impl in ("torch", "flex")}
    models["flex"].load_state_dict(models["torch"].state_dict())
    batch = token_batch()
    grads = {}
    for impl, model in models.items():
        model(batch["input_ids"], sequence_id=DOCS, labels=batch["labels"]).loss.backward()
        grads[impl] = model.transformer.blocks[0].attn.Wqkv.weight.grad
    assert grads["flex"].abs().sum() > 0 and torch.equal(grads["flex"], grads["torch"])


@pytest.mark.parametrize("impl", ["torch", "flex"])
def test_token_cannot_see_other_documents(impl):
    model = tiny_model(**SHAPE, no_bias=True,
                       attn_config={"alibi": True, "attn_uses_sequence_id": True, "attn_impl": impl}).to(DEVICE)
    embeds = model.transformer.wte(token_batch()["input_ids"].to(DEVICE)).detach().requires_grad_()
    hidden = model.transformer(inputs_embeds=embeds, sequence_id=DOCS.to(DEVICE))
    # Token 9 of row 0 lies in document 1 (positions 5..11). A random projection, because a plain sum
    # of a LayerNorm's output is constant.
    (hidden[0, 9] * torch.randn(hidden.shape[-1], device=DEVICE)).sum().backward()
    grad = embeds.grad[0].abs().sum(-1)
    assert torch.all(grad[:5] == 0) and torch.all(grad[10:] == 0)  # other documents, and the future
    assert torch.all(grad[5:10] > 0)  # its own document up to itself
    assert torch.all(embeds.grad[1] == 0)  # other rows


@pytest.mark.parametrize("impl", ["torch", "flex"])
@pytest.mark.parametrize("position", ["alibi", "rope_gqa_qkln"])
def test_packed_document_equals_document_alone(impl, position):
    # ALiBi and RoPE depend on token distance only, so a document reads the same wherever it is packed.
    overrides = POSITIONS[position]
    model = tiny_model(**{**overrides, "attn_config": {**overrides["attn_config"], "attn_uses_sequence_id": True,
                                                     "attn_impl": impl}})
    ids = token_batch()["input_ids"][:1]
    with torch.no_grad():
        packed = model(ids, sequence_id=DOCS[:1]).logits[0, 5:12]
        alone = model(ids[:, 5:12]).logits[0]
    assert torch.allclose(packed, alone, atol=1e-5)


def test_sequence_id_ignored_unless_attn_uses_sequence_id():
    model = tiny_model(attn_config={"attn_uses_sequence_id": False})
    ids = token_batch()["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids, sequence_id=DOCS).logits, model(ids).logits)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["flash", "triton"])  # compiled flex; our Triton kernel
@pytest.mark.parametrize("documents", [False, True])
def test_gpu_backends_match_torch(documents, impl):
    gpu = torch.device("cuda")
    overrides = dict(d_model=256, n_heads=4, n_layers=2, vocab_size=512, max_seq_len=512, no_bias=True)
    models = {impl: tiny_model(**overrides, attn_config={"alibi": True, "attn_uses_sequence_id": True,
                                                         "attn_impl": impl}).to(gpu)
              for impl in ("torch", impl)}
    models[impl].load_state_dict(models["torch"].state_dict())
    ids = torch.randint(0, 512, (2, 512), device=gpu)
    sequence_id = torch.arange(512, device=gpu).div(100, rounding_mode="floor").expand(2, 512) if documents else None
    outs = {}
    for name, model in models.items():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, sequence_id=sequence_id, labels=ids)
        out.loss.backward()
        outs[name] = (out.logits.float(), model.transformer.blocks[0].attn.Wqkv.weight.grad)
    assert (outs["torch"][0] - outs[impl][0]).abs().max().item() < 0.1  # bf16 rounding
    assert torch.allclose(outs["torch"][1], outs[impl][1], atol=1e-2, rtol=5e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("documents", [False, True])
def test_gpu_flex_runs_flash_attention_4_where_installed(documents):
    from llmtrain.models.mpt import flex_backend
    if not flex_backend.flash_installed():
        pytest.skip("flash-attn-4 is not installed (pip install '.[hopper]')")
    # MPT-1B's heads with ALiBi: FA4 compiles and agrees with flex's Triton kernel, so it is chosen for a
    # causal mask; with documents Triton is faster and is kept.
    expected = flex_backend.TRITON if documents else flex_backend.FLASH
    assert flex_backend.choose(16, 16, 128, 8.0, True, documents) == expected


@pytest.mark.gpu
def test_flash_attention_4_can_be_ruled_out(monkeypatch):
    from llmtrain.models.mpt import flex_backend
    if not flex_backend.flash_installed():
        pytest.skip("flash-attn-4 is not installed (pip install '.[hopper]')")
    monkeypatch.setenv(flex_backend.OPT_OUT, "0")
    flex_backend.choose.cache_clear()
    assert flex_backend.choose(16, 16, 128, 8.0, True, False) == flex_backend.TRITON
    flex_backend.choose.cache_clear()
