"""Run by test_world_size.py under `composer -n N`: the ICLEvaluator callback inside Composer's Trainer with
FSDP2 (gloo) on a tiny MPT, one step at lr 0 so every world size scores the same weights.

argv: ICL_YAML OUT_DIR. Writes OUT_DIR/metrics.jsonl (the callback's logged metrics, through MetricsJsonl),
from rank 0 OUT_DIR/outcomes.json (every example's outcome from that same evaluation), and the sharded
checkpoint of those weights in OUT_DIR/checkpoints/ep0-ba1 (with the model recipe, as train.py saves it).
"""
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from composer import Trainer
from composer.utils import dist
from composer.utils.parallelism import FSDP2Config
from torch.distributed.fsdp import FSDPModule

from llmtrain.loggers.metrics_jsonl import MetricsJsonl
from llmtrain.checkpoint import ModelRecipe
from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer
from llmtrain.eval.callback import ICLEvaluator
from llmtrain.eval.evaluator import load_tasks
from llmtrain.eval.tasks import load_eval_spec
from llmtrain.models import build_composer_mpt
from tests.eval.tasks import VOCAB

BATCH = 2  # sequences per forward: small, so the ranks' shares take different numbers of batches


class Recorded(ICLEvaluator):
    """The callback as it is, also writing the outcomes it scored (rank 0)."""

    def __init__(self, out: Path, *args):
        super().__init__(*args)
        self.out = out

    def run(self, state):
        assert isinstance(state.model.model, FSDPModule)
        results = super().run(state)
        if dist.get_global_rank() == 0:
            (self.out / "outcomes.json").write_text(json.dumps(
                {f"{r.label}/{r.num_fewshot}": [asdict(o) for o in r.outcomes] for r in results}))
        return results


def main(icl_yaml: str, out_dir: str) -> None:
    out = Path(out_dir)
    dist.initialize_dist("cpu")
    torch.manual_seed(0)
    section = {"name": "mpt_causal_lm", "d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": VOCAB,
               "max_seq_len": 128, "no_bias": True, "init_device": "mixed", "attn_config": {"attn_impl": "torch"}}
    model = build_composer_mpt({k: v for k, v in section.items() if k != "name"})
    tokenizer = build_tokenizer(NEOX_NAME)
    tasks = load_tasks(load_eval_spec(icl_yaml).icl_tasks, tokenizer, 128)
    samples = [{"input_ids": torch.arange(16), "labels": torch.arange(16)}] * 2
    loader = torch.utils.data.DataLoader(samples, batch_size=2 // dist.get_world_size(),
                                         sampler=dist.get_sampler(samples, shuffle=False))
    trainer = Trainer(model=model, train_dataloader=loader, max_duration="1ba", device="cpu",
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
                      parallelism_config={"fsdp": FSDP2Config(state_dict_type="sharded")},
                      callbacks=[Recorded(out, tasks, tokenizer, BATCH, "1ba"),
                                 ModelRecipe(section, {"name": NEOX_NAME, "kwargs": {}})],
                      save_folder=str(out / "checkpoints"), save_interval="1ba",
                      loggers=[MetricsJsonl(out / "metrics.jsonl")], progress_bar=False, log_to_console=False, seed=0)
    trainer.fit()

if __name__ == "__main__":
    main(*sys.argv[1:3])
