import pytest

from llmtrain.errors import UserError
from llmtrain.models import ComposerMPT
from llmtrain.registry import models

ENTRY = models.get("mpt_causal_lm", "model.name")

# The model section of an llm-foundry MPT recipe, extras included.
LLM_FOUNDRY_SECTION = {
    "init_device": "meta", "d_model": 64, "n_heads": 4, "n_layers": 2, "expansion_ratio": 4,
    "max_seq_len": 32, "vocab_size": 64, "no_bias": True, "loss_fn": "torch_crossentropy",
    "fc_type": "torch", "ffn_config": {"ffn_type": "mptmlp"},
    "attn_config": {"attn_impl": "flash", "alibi": True, "attn_uses_sequence_id": True, "prefix_lm": False},
    "init_config": {"name": "kaiming_normal_", "init_div_is_residual": True},
}


def test_builds_composer_mpt_from_plain_section():
    model = ENTRY.build({**LLM_FOUNDRY_SECTION, "init_device": "cpu"})
    assert isinstance(model, ComposerMPT)
    assert model.model.config.attn_config["alibi"] is True
    assert not model.model.config.learned_pos_emb  # ALiBi turns learned positions off, as in llm-foundry


def test_meta_init_builds_no_storage():
    model = ENTRY.build(LLM_FOUNDRY_SECTION)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("section, message", [
    ({"attn_config": {"alibii": True}}, r"^model\.attn_config\.alibii: unknown key \(did you mean 'alibi'\?\)"),
    ({"d_modle": 64}, r"^model\.d_modle: unknown key \(did you mean 'd_model'\?\)"),
    ({"init_config": {"name": "xavier_uniform_"}}, r"^model\.init_config\.name: 'xavier_uniform_' is not allowed"),
    ({"d_model": 64, "n_heads": 5}, r"^model\.n_heads: d_model=64 is not divisible"),
    ({"attn_config": {"attn_type": "grouped_query_attention", "kv_n_heads": 3}}, r"^model\.attn_config\.kv_n_heads:"),
    ({"attn_config": {"attn_impl": "flex", "attn_pdrop": 0.1}}, r"^model\.attn_config\.attn_pdrop: flex"),
    ({"attn_config": {"alibi": True, "rope": True}}, r"^model\.attn_config\.rope:"),
    ({"fc_type": "te"}, r"^model\.fc_type: 'te' is not allowed"),
    ({"resid_pdrop": 1.5}, r"^model\.resid_pdrop: 1\.5 is not a dropout probability"),
    ({"init_config": {"name": "baseline_"}}, r"^model\.init_config\.init_std: baseline_ init needs init_std"),
])
def test_validate_names_the_dotted_key(section, message):
    with pytest.raises(UserError, match=message):
        ENTRY.validate(section, "model")
    with pytest.raises(UserError, match=message):
        ENTRY.build(section)
