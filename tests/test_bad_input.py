"""Bad input wherever a user types it — recipe YAML, command-line overrides, data paths, s3:// URIs (scheme,
bucket, credentials, endpoint), tokenizer names, checkpoint paths — is one line naming what is wrong and how to
fix it (the cases other test files hold are listed in docs/reliability.md)."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmtrain import builders
from llmtrain.checkpoint import check_load_path, read_checkpoint, repair_latest
from llmtrain.builders import load_config
from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer, install_tokenizers
from llmtrain.errors import UserError
from tests.checkpoint.harness import SUBPROCESS_ENV, free_port

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "yamls" / "tiny.yaml"
DURATION_HELP = ("use a number and a unit, e.g. 100ba (batches), 1ep (epochs), 10000tok (tokens), 500sp (samples) "
                 "or 0.5dur (of max_duration)")


def error_of(action) -> str:
    with pytest.raises(UserError) as err:
        action()
    assert "\n" not in str(err.value)
    return str(err.value)


# --- the recipe and its overrides ---------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["max_duration=10bananas"], f"max_duration: '10bananas' is not a duration; {DURATION_HELP}"),
    (["save_interval=often"], f"save_interval: 'often' is not a duration; {DURATION_HELP}"),
    (["device=tpu"], "device: 'tpu' is not allowed (did you mean 'gpu'?); choose one of: cpu, gpu"),
    (["tokenizer.name=5"], "tokenizer.name: expected a string, got int 5"),
    (["callbacks.speed_monitor=5"], "callbacks.speed_monitor: expected a mapping of options (use {} for none), got 5"),
    (["max_seq_len.foo=1"], "max_seq_len: expected an integer, got dict {'foo': 1}"),
    (["save_folder=null", "autoresume=true"],
     "autoresume: true needs a save_folder to resume from; set save_folder, or autoresume=false"),
    (["fp8.recipe=blockwise"], "fp8.recipe: 'blockwise' is not allowed (did you mean 'rowwise'?); choose one of: "
                               "tensorwise, rowwise, rowwise_with_gw_hp"),
    (["device_train_microbatch_size=0"], "device_train_microbatch_size: 0 is out of range; it must be at least 1"),
    (["global_train_batch_size=-4"], "global_train_batch_size: -4 is out of range; it must be at least 1"),
    (["max_seq_len=0"], "max_seq_len: 0 is out of range; it must be at least 1"),
    (["eval_subset_num_batches=0"], "eval_subset_num_batches: 0 is out of range; it must be at least 1 (or -1 for all)"),
    (["save_num_checkpoints_to_keep=-2"],
     "save_num_checkpoints_to_keep: -2 is out of range; it must be 0 or more (or -1 for all)"),
    (["object_store_retry_timeout=-1"], "object_store_retry_timeout: -1.0 is out of range; it must be 0 or more"),
    (["~"], "override '~': expected dotted.key=value (or ~dotted.key to remove a key), e.g. optimizer.lr=1e-4"),
])
def test_bad_recipe_value_or_override(overrides, message):
    assert error_of(lambda: load_config(TINY, overrides)) == message


def test_recipe_that_is_a_list(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- model\n- optimizer\n")
    assert error_of(lambda: load_config(path)) == f"{path}: a run config must be a mapping of keys (model:, " \
                                                  "train_loader:, ...)"


def test_cli_without_a_recipe_prints_usage():
    done = subprocess.run([sys.executable, "scripts/train.py"], cwd=ROOT, env={**os.environ, **SUBPROCESS_ENV},
                          capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (2, "usage: scripts/train.py RECIPE.yaml [dotted.key=value ...]\n")


# --- tokenizer names -----------------------------------------------------------------------------------

def test_tokenizer_name_that_is_not_installed():
    assert error_of(lambda: build_tokenizer("meta-llama/Llama-2-7b")) == (
        "tokenizer.name: 'meta-llama/Llama-2-7b' is not installed and is not a local directory; known names: "
        "EleutherAI/gpt-neox-20b (install with 'make setup'), or pass a local directory containing tokenizer.json")


def test_empty_tokenizer_name():
    assert error_of(lambda: build_tokenizer("")) == ("tokenizer.name: directory '' has no tokenizer.json; pass a "
                                                     "Hugging Face tokenizer directory (with tokenizer.json)")


# --- data paths and s3:// data -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def neox():
    install_tokenizers()
    return build_tokenizer(NEOX_NAME)


def build_loader(remote: str, local: Path, tokenizer):
    section = {"name": "text", "dataset": {"remote": remote, "local": str(local), "max_seq_len": 32}}
    return builders.build_dataloader(section, "train_loader", tokenizer, 2)


def test_data_folder_that_does_not_exist(tmp_path, neox):
    cfg = load_config(TINY, [f"variables.data_remote={tmp_path}/nodata", f"variables.data_local={tmp_path}/cache"])
    index = f"{tmp_path}/nodata/python_stdlib/index.json"
    assert error_of(lambda: builders.build_dataloader(cfg.train_loader, "train_loader", neox, 2)) == (
        f"train_loader.dataset.streams.python_stdlib: reading {index}: FileNotFoundError: [Errno 2] No such file or "
        f"directory: '{index}'")


def no_retries(caplog) -> None:
    """What the s3:// data tests below assert besides the line: it came at once, not after retries."""
    assert not [r.message for r in caplog.records if "retrying" in r.message]


def test_data_in_a_bucket_that_does_not_exist(tmp_path, neox, s3_server, caplog):
    assert error_of(lambda: build_loader("s3://no-such-bucket-llmtrain/mix", tmp_path, neox)) == (
        "train_loader.dataset: reading s3://no-such-bucket-llmtrain/mix/index.json: bucket 'no-such-bucket-llmtrain' "
        f"does not exist at {s3_server.endpoint}; check the URI and S3_ENDPOINT_URL")
    no_retries(caplog)


def test_data_without_credentials(tmp_path, neox, s3_server, monkeypatch, caplog):
    bucket = s3_server.make_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert error_of(lambda: build_loader(f"s3://{bucket}/mix", tmp_path, neox)) == (
        f"train_loader.dataset: reading s3://{bucket}/mix/index.json: no credentials for {s3_server.endpoint} "
        "(NoCredentialsError: Unable to locate credentials); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
        "AWS_PROFILE)")
    no_retries(caplog)


def test_data_with_a_wrong_secret_key(tmp_path, neox, s3_server, monkeypatch, caplog):
    bucket = s3_server.make_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert error_of(lambda: build_loader(f"s3://{bucket}/mix", tmp_path, neox)) == (
        f"train_loader.dataset: reading s3://{bucket}/mix/index.json: access denied by {s3_server.endpoint} "
        f"(HTTP 403); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and that they may use bucket '{bucket}'")
    no_retries(caplog)


def test_data_without_S3_ENDPOINT_URL(tmp_path, neox, s3_server, monkeypatch, caplog):
    """Requests go to AWS S3: unreachable from this machine (no network), or refused there (unknown key). Either
    is one line at once that says S3_ENDPOINT_URL is not set, not a wait of object_store_retry_timeout (300 s)."""
    monkeypatch.delenv("S3_ENDPOINT_URL")
    started = time.monotonic()
    message = error_of(lambda: build_loader("s3://llmtrain-test-bucket/mix", tmp_path, neox))
    assert time.monotonic() - started < 30
    assert message.startswith("train_loader.dataset: reading s3://llmtrain-test-bucket/mix/index.json: ")
    assert re.search(r"AWS S3 cannot be reached \(EndpointConnectionError: .*\) and S3_ENDPOINT_URL is not set; set "
                     r"S3_ENDPOINT_URL to your object store's URL \(e.g. http://HOST:9000\), or check the network if "
                     r"the bucket is on AWS$|\(S3_ENDPOINT_URL is not set, so s3:// means AWS S3: set it to use "
                     r"another store\)$", message), message
    no_retries(caplog)


# --- save_folder and load_path on s3:// ----------------------------------------------------------------

def test_save_folder_with_a_scheme_that_cannot_be_checked():
    assert error_of(lambda: repair_latest("gs://bucket/run/checkpoints")) == (
        "save_folder: 'gs://bucket/run/checkpoints': checkpoints are checked (autoresume, conversion) in local "
        "folders and s3:// only; use one of those")


def test_save_folder_in_a_bucket_that_does_not_exist(s3_server):
    assert error_of(lambda: repair_latest("s3://no-such-bucket-llmtrain/ckpt")) == (
        "save_folder: 's3://no-such-bucket-llmtrain/ckpt': list_objects_v2 failed (NoSuchBucket: An error occurred "
        "(NoSuchBucket) when calling the ListObjectsV2 operation: The specified bucket does not exist.); check the "
        "bucket, its permissions and the S3_ENDPOINT_URL / AWS_* environment")


def test_save_folder_without_credentials(s3_server, monkeypatch):
    bucket = s3_server.make_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert error_of(lambda: repair_latest(f"s3://{bucket}/ckpt")) == (
        f"save_folder: 's3://{bucket}/ckpt': list_objects_v2 failed (NoCredentialsError: Unable to locate "
        "credentials); check the bucket, its permissions and the S3_ENDPOINT_URL / AWS_* environment")


def test_load_path_in_a_bucket_that_does_not_exist(s3_server):
    assert error_of(lambda: check_load_path("s3://no-such-bucket-llmtrain/ep0-ba6-rank0.pt", "r", False)) == (
        "load_path: 's3://no-such-bucket-llmtrain/ep0-ba6-rank0.pt': cannot list it (NoSuchBucket: An error occurred "
        "(NoSuchBucket) when calling the ListObjectsV2 operation: The specified bucket does not exist.); check the "
        "URI and S3_* / AWS_* environment")


def test_load_path_with_an_endpoint_nothing_listens_on(s3_server, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    assert error_of(lambda: check_load_path("s3://bucket/ep0-ba6-rank0.pt", "r", False)) == (
        f"load_path: 's3://bucket/ep0-ba6-rank0.pt': cannot list it (EndpointConnectionError: Could not connect to "
        f"the endpoint URL: \"{endpoint}/bucket?list-type=2&prefix=ep0-ba6-rank0.pt&encoding-type=url\"); check the "
        "URI and S3_* / AWS_* environment")


# --- checkpoint paths (scripts/convert_to_hf.py, scripts/generate.py) ----------------------------------

def test_checkpoint_that_does_not_exist(tmp_path):
    assert error_of(lambda: read_checkpoint(f"{tmp_path}/ep0-ba9-rank0.pt")) == (
        f"checkpoint '{tmp_path}/ep0-ba9-rank0.pt' does not exist; pass a sharded folder (ep{{E}}-ba{{B}}/), a full "
        ".pt file or a save_folder's latest-rank0.pt")


def test_checkpoint_with_an_unsupported_scheme():
    assert error_of(lambda: read_checkpoint("gs://bucket/ep0-ba9-rank0.pt")) == (
        "checkpoint 'gs://bucket/ep0-ba9-rank0.pt': scheme 'gs://' is not supported here; use a local path or s3://")


def test_checkpoint_that_is_not_a_checkpoint_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    assert error_of(lambda: read_checkpoint(str(path))).startswith(
        f"checkpoint '{path}' is not a Composer checkpoint (RuntimeError: ")


def test_checkpoint_folder_without_an_index(tmp_path):
    assert error_of(lambda: read_checkpoint(str(tmp_path))) == (
        f"checkpoint '{tmp_path}' is a folder without .metadata; pass a sharded checkpoint folder (ep{{E}}-ba{{B}}/) "
        "or a .pt file")


def test_checkpoint_missing_from_a_bucket(s3_server):
    bucket = s3_server.make_bucket()
    assert error_of(lambda: read_checkpoint(f"s3://{bucket}/run/ep0-ba9-rank0.pt")) == (
        f"checkpoint 's3://{bucket}/run/ep0-ba9-rank0.pt' does not exist; pass a sharded folder or a full .pt file")
    assert error_of(lambda: read_checkpoint(f"s3://{bucket}/run/latest-rank0.pt")) == (
        f"checkpoint 's3://{bucket}/run/latest-rank0.pt': s3://{bucket}/run has no latest-rank0.pt.symlink")
