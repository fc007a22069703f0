"""A tiny MPT (1 layer) trained 80 steps (Composer's Trainer) on text with the tasks' pattern (counting:
"41 42 43 44 45") scores clearly above chance on task examples drawn apart from that text; the same model
untrained does not. The scores come from the ICLEvaluator callback at the end of training."""
import json
import random
import time

import torch
from composer import Trainer
from composer.loggers import InMemoryLogger

from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer, install_tokenizers
from llmtrain.eval.callback import ICLEvaluator
from llmtrain.eval.evaluator import evaluate, load_tasks
from llmtrain.eval.tasks import ICLTaskConfig
from llmtrain.models import build_composer_mpt
from tests.eval.tasks import write_jsonl

SEQ, BATCH, STEPS = 32, 8, 80
# Every token of the counting text ("0".."99", with and without a leading space, and EOS) is below 11681 in
# gpt-neox-20b's vocabulary, so the model's vocabulary stops there: a quarter of the output layer's work.
VOCAB_USED = 11776


def counting_text(rng: random.Random, tokenizer) -> list[int]:
    """Runs of 5-10 consecutive numbers below 100, joined by EOS, cut into SEQ-token samples."""
    ids: list[int] = []
    while len(ids) < SEQ * BATCH * STEPS:
        start = rng.randrange(0, 90)
        run = " ".join(str(n) for n in range(start, start + rng.randrange(5, 11)))
        ids += tokenizer(run, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:SEQ * BATCH * STEPS]


def task_files(tmp_path, rng: random.Random) -> list[ICLTaskConfig]:
    lm, mc = [], []
    for _ in range(40):
        start = rng.randrange(0, 95)
        context = " ".join(str(n) for n in range(start, start + 4))
        lm.append({"context": context, "continuation": str(start + 4)})
        wrong = rng.sample([n for n in range(100) if n != start + 4], 3)
        gold = rng.randrange(4)
        choices = [str(n) for n in wrong[:gold] + [start + 4] + wrong[gold:]]
        mc.append({"query": context, "choices": choices, "gold": gold})
    return [ICLTaskConfig(label="next_number", dataset_uri=str(write_jsonl(tmp_path / "lm.jsonl", lm)),
                          icl_task_type="language_modeling", num_fewshot=[0]),
            ICLTaskConfig(label="pick_next", dataset_uri=str(write_jsonl(tmp_path / "mc.jsonl", mc)),
                          icl_task_type="multiple_choice", num_fewshot=[0, 1])]


def test_trained_model_beats_chance_untrained_does_not(tmp_path):
    install_tokenizers()
    tokenizer = build_tokenizer(NEOX_NAME)
    ids = torch.tensor(counting_text(random.Random(0), tokenizer)).view(-1, SEQ)
    samples = [{"input_ids": row, "labels": row.clone()} for row in ids]
    tasks = load_tasks(task_files(tmp_path, random.Random(1)), tokenizer, SEQ)
    torch.manual_seed(0)
    model = build_composer_mpt({"d_model": 64, "n_heads": 4, "n_layers": 1, "vocab_size": VOCAB_USED,
                                "max_seq_len": SEQ, "no_bias": True, "attn_config": {"attn_impl": "torch"}})
    untrained = {r.key: r.accuracy for r in evaluate(model.model.eval(), tasks, tokenizer, 32, torch.device("cpu"))}

    logged = InMemoryLogger()
    started = time.perf_counter()
    Trainer(model=model, train_dataloader=torch.utils.data.DataLoader(samples, batch_size=BATCH),
            optimizers=torch.optim.AdamW(model.parameters(), lr=5e-3), max_duration=f"{STEPS}ba", device="cpu",
            callbacks=[ICLEvaluator(tasks, tokenizer, 32, f"{STEPS}ba")], loggers=[logged],
            progress_bar=False, log_to_console=False, seed=0).fit()
    trained = {key: values[-1][1] for key, values in logged.data.items() if key.startswith("icl/")}
    print(json.dumps({"untrained": untrained, "trained": trained, "seconds": time.perf_counter() - started}))

    assert sorted(trained) == ["icl/next_number/0-shot", "icl/pick_next/0-shot", "icl/pick_next/1-shot"]
    assert untrained["next_number/0-shot"] == 0 and trained["icl/next_number/0-shot"] >= 0.6  # chance: ~0
    for shots in (0, 1):  # four choices: chance 0.25
        assert untrained[f"pick_next/{shots}-shot"] <= 0.45 and trained[f"icl/pick_next/{shots}-shot"] >= 0.8
