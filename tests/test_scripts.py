"""What a user watches and does with a run, end to end through the scripts (CPU, real stack):
scripts/train.py with a held-out eval stream and wandb (offline, no credentials, no network), no
secret from the environment in anything the run writes, scripts/plot_run.py on the run, and
scripts/generate.py on its checkpoint and on an exported folder."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmtrain.data.tokenizer import cache_root
from tests.data.corpus import write_stream_shards

ROOT = Path(__file__).resolve().parents[1]
SEQ = 32
# yamls/tiny.yaml shrunk and pointed at the test shards, by overrides only
SMALL = ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", f"variables.max_seq_len={SEQ}",
         "global_train_batch_size=4", "device_train_microbatch_size=4", "console_log_interval=1ba",
         "train_loader.dataset.shuffle=false"]
# Distinctive values for every credential the environment may hold; none may show up in a run's output.
SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAOBSERVETESTKEY01", "AWS_SECRET_ACCESS_KEY": "s3cr3t-aws-0bserve-7f3a",
           "AWS_SESSION_TOKEN": "s3ss10n-t0ken-0bserve-91c2", "HF_TOKEN": "hf_0bserveTestT0ken5e1"}
WANDB_KEY = "0bserve" + "0123456789abcdef" * 2 + "wxyz"  # 40 characters, like a real key


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_stream_shards(tmp_path_factory.mktemp("shards"), ["python_stdlib", "licenses", "heldout"], SEQ, 60)


def script(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(env or os.environ)
    # This checkout's llmtrain first (an editable install may point at another clone).
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def train(run_dir: Path, shards: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    overrides = [*SMALL, f"variables.data_remote={shards}", f"variables.data_local={run_dir}/cache",
                 f"run_dir={run_dir}", f"save_folder={run_dir}/checkpoints", *args]
    done = script(["scripts/train.py", "yamls/tiny.yaml", *overrides], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def clean_env(home: Path) -> dict:
    """No wandb credentials anywhere: no WANDB_* variables, and a HOME without ~/.netrc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k not in SECRETS}
    home.mkdir(parents=True, exist_ok=True)
    # The tokenizer cache stays where it is (its default lives under HOME).
    return {**env, "HOME": str(home), "LLMTRAIN_CACHE": str(cache_root()), **SECRETS}


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    """6 steps, eval on the held-out stream every 3, wandb configured without credentials."""
    run_dir = tmp_path_factory.mktemp("run")
    eval_loader = ("eval_loader={name: text, dataset: {max_seq_len: %d, streams: {heldout: "
                   "{local: %s/heldout}}}, num_workers: 0}" % (SEQ, shards))
    done = train(run_dir, shards, ["max_duration=6ba", "save_interval=6ba", eval_loader, "eval_interval=3ba",
                                   "eval_subset_num_batches=2", "loggers={wandb: {project: x}}"],
                 clean_env(run_dir / "home"))
    return run_dir, done


def records_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_eval_perplexity_lands_in_metrics_jsonl(run):
    run_dir, _ = run
    records = records_of(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    evaluated = [r["step"] for r in records if "metrics/eval/LanguageCrossEntropy" in r]
    assert evaluated == [3, 6]
    for r in records:
        if r["step"] in evaluated:
            ce, ppl = r["metrics/eval/LanguageCrossEntropy"], r["metrics/eval/LanguagePerplexity"]
            assert 0 < ce < 20 and ppl == pytest.approx(math.exp(ce), rel=1e-4)
    first, last = (next(r for r in records if r["step"] == s) for s in evaluated)
    # The same two held-out batches each time: the model learned something general in 3 steps.
    assert last["metrics/eval/LanguageCrossEntropy"] < first["metrics/eval/LanguageCrossEntropy"]


def test_wandb_without_credentials_logs_offline_into_the_run_dir(run):
    run_dir, done = run
    assert "wandb: no credentials found; logging offline" in done.stdout + done.stderr
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    assert list(offline[0].glob("run-*.wandb")) and (offline[0] / "files").is_dir()


def _files_holding(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and "cache" not in path.relative_to(root).parts[:1]:
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return found


def test_no_secret_from_the_environment_in_what_the_run_writes(run):
    run_dir, done = run
    secrets = list(SECRETS.values())
    assert not [s for s in secrets if s in done.stdout + done.stderr]
    assert not _files_holding(run_dir, secrets)  # config.yaml, metrics.jsonl, wandb/, checkpoints/


@pytest.fixture(scope="module")
def keyed_run(shards, tmp_path_factory):
    """A run whose environment holds a wandb API key (offline: there is no network here)."""
    run_dir = tmp_path_factory.mktemp("keyed")
    env = {**clean_env(run_dir / "home"), "WANDB_API_KEY": WANDB_KEY, "WANDB_MODE": "offline",
           "LLMTRAIN_TEST_TOKEN": "t0ken-fr0m-0c-env-5b7d"}
    done = train(run_dir, shards, ["max_duration=2ba", "save_folder=null", "loggers={wandb: {project: x}}",
                                   "variables.token=${oc.env:LLMTRAIN_TEST_TOKEN}"], env)
    return run_dir, done


def test_wandb_api_key_is_not_written_anywhere(keyed_run):
    run_dir, done = keyed_run
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert WANDB_KEY not in done.stdout + done.stderr
    assert not _files_holding(run_dir, [WANDB_KEY, *SECRETS.values()])


def test_oc_env_interpolation_does_not_copy_the_value_into_config_yaml(keyed_run):
    run_dir, _ = keyed_run
    recorded = (run_dir / "config.yaml").read_text()
    assert "t0ken-fr0m-0c-env-5b7d" not in recorded
    assert "<env:" in recorded  # the reference is recorded instead


def test_plot_run_draws_every_panel(run, tmp_path):
    from matplotlib.image import imread

    run_dir, _ = run
    done = script(["scripts/plot_run.py", str(run_dir)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{run_dir / 'report.png'}: loss, lr, throughput, data mix"
    height, width = imread(run_dir / "report.png").shape[:2]
    assert (width, height) == (1400, 840)


def test_plot_run_without_metrics_is_one_line_error(tmp_path):
    done = script(["scripts/plot_run.py", str(tmp_path)])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {tmp_path / 'metrics.jsonl'}: not found; pass the run directory of a " \
                          f"training run (it holds config.yaml and metrics.jsonl)\n"
    (tmp_path / "metrics.jsonl").write_text("")
    done = script(["scripts/plot_run.py", str(tmp_path)])
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no step records yet" in done.stderr


def test_generate_from_checkpoint_and_from_export_agree(run, tmp_path):
    """Greedy text from the run directory (its latest checkpoint, converted on the fly with the run's
    config.yaml and tokenizer) equals greedy text from a folder exported beforehand without a tokenizer
    (gpt-neox-20b by default)."""
    import torch

    from llmtrain.models.mpt.configuration import MPTConfig
    from llmtrain.models.mpt.hf_interop import export_hf
    from llmtrain.models.mpt.modeling import MPTForCausalLM

    run_dir, _ = run
    checkpoint = run_dir / "checkpoints" / "ep0-ba6-rank0.pt"
    prompt = ["--prompt", "def square(x):", "--max-new-tokens", "12", "--temperature", "0"]
    from_checkpoint = script(["scripts/generate.py", str(run_dir), *prompt])
    assert from_checkpoint.returncode == 0, from_checkpoint.stderr[-3000:]
    text = from_checkpoint.stdout
    assert text.startswith("def square(x):") and len(text) > len("def square(x):\n")

    model = MPTForCausalLM(MPTConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=SEQ, vocab_size=50432,
                                     no_bias=True, attn_config={"alibi": True}))
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["model"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items()})
    export_hf(model, tmp_path / "hf")
    from_folder = script(["scripts/generate.py", str(tmp_path / "hf"), *prompt])
    assert from_folder.returncode == 0, from_folder.stderr[-3000:]
    assert from_folder.stdout == text

    sampled = script(["scripts/generate.py", str(tmp_path / "hf"), "--prompt", "def square(x):",
                      "--max-new-tokens", "12", "--temperature", "1.0", "--seed", "3"])
    assert sampled.returncode == 0 and sampled.stdout.startswith("def square(x):")


def test_generate_errors_are_one_line(tmp_path):
    done = script(["scripts/generate.py", str(tmp_path / "nope"), "--prompt", "x"])
    assert done.returncode == 2
    assert done.stderr == f"error: MODEL: '{tmp_path / 'nope'}' does not exist; pass an exported folder " \
                          f"or a checkpoint\n"
    done = script(["scripts/generate.py", str(tmp_path), "--prompt", "x"])  # a folder with no model
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_read_metrics_merges_a_step_and_skips_a_torn_last_line(tmp_path):
    from llmtrain.errors import UserError
    from llmtrain.loggers.report import read_metrics

    lines = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 1, "loss": 2.9},  # resumed at step 0
             {"step": 2, "loss": 2.5}, {"step": 2, "metrics/eval/LanguageCrossEntropy": 2.7}]  # eval after the end
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"step": 3, "lo')  # killed mid-write
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.9},
                                      {"step": 2, "loss": 2.5, "metrics/eval/LanguageCrossEntropy": 2.7}]
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(UserError, match=rf"^{path}:2: not a JSON object"):
        read_metrics(tmp_path)
