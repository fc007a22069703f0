"""Every task type's per-example log-likelihoods, choices, greedy matches and generations, as scripts/eval.py
computes them (batched, padded, from the exported folder), equal a reference computed one example at a time
with stock transformers.MptForCausalLM (fp32, CPU) on the same token sequences."""
import pytest
import torch
import transformers

from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer, install_tokenizers
from llmtrain.eval.evaluator import evaluate, load_tasks
from llmtrain.eval.scoring import score
from llmtrain.eval.tasks import load_eval_spec
from llmtrain.models.mpt.hf_interop import export_hf
from llmtrain.models.sources import load_model
from tests.eval.tasks import icl_yaml, tiny_mpt, write_all_types

TOL = 1e-4  # summed over a continuation's tokens; stock MPT's ops are not ours (fp32)


def reference_sequence(stock, tokens: list[int], n_scored: int) -> tuple[float, bool]:
    ids = torch.tensor([tokens])
    logprobs = stock(ids).logits[0, :-1].log_softmax(-1)  # position t predicts token t + 1
    positions = range(len(tokens) - 1 - n_scored, len(tokens) - 1)
    targets = [tokens[t + 1] for t in positions]
    ll = sum(logprobs[t, y].item() for t, y in zip(positions, targets))
    greedy = all(logprobs[t].argmax().item() == y for t, y in zip(positions, targets))
    return ll, greedy


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    install_tokenizers()
    tmp = tmp_path_factory.mktemp("reference")
    export_hf(tiny_mpt(seed=3), tmp / "hf", build_tokenizer(NEOX_NAME))
    spec = load_eval_spec(str(icl_yaml(tmp / "icl.yaml", write_all_types(tmp), shots=(2,))))
    model, tokenizer, max_seq_len = load_model(str(tmp / "hf"))
    tasks = load_tasks(spec.icl_tasks, tokenizer, max_seq_len)
    with torch.no_grad():
        results = evaluate(model, tasks, tokenizer, batch_size=3, device=torch.device("cpu"))
    stock = transformers.MptForCausalLM.from_pretrained(tmp / "hf", dtype=torch.float32).eval()
    return tasks, results, stock, tokenizer, model


def test_every_task_type_matches_stock_mpt(scored):
    tasks, results, stock, tokenizer, _ = scored
    by_label = {t.config.label: t for t in tasks}
    checked = set()
    with torch.no_grad():
        for result in results:
            task = by_label[result.label]
            kind = task.config.icl_task_type
            assert [o.index for o in result.outcomes] == list(range(len(task.prompts.examples)))
            for out in result.outcomes:
                request = task.prompts.request(out.index, result.num_fewshot)
                if kind == "question_answering":
                    ids = torch.tensor([request.sequences[0].tokens])
                    new = stock.generate(ids, max_new_tokens=task.prompts.max_new_tokens, do_sample=False,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
                    assert out.generated == tokenizer.decode(new[0, ids.shape[1]:], skip_special_tokens=True)
                    continue
                want = [reference_sequence(stock, s.tokens, s.n_scored) for s in request.sequences]
                assert out.log_likelihoods == pytest.approx([ll for ll, _ in want], abs=TOL)
                if kind == "language_modeling":
                    assert out.correct == want[0][1]
                else:
                    choice = max(range(len(want)), key=lambda i: want[i][0])
                    assert out.choice == choice and out.correct == (choice == request.gold)
            checked.add((kind, result.num_fewshot))
    assert len(checked) == 4  # every task type, with 2-shot prompts


def test_scores_are_not_trivial(scored):
    """The comparison above means something: the continuations differ in length and score, and some choices
    are right and some wrong."""
    _, results, _, _, _ = scored
    mc = next(r for r in results if r.label == "multiple_choice" and r.num_fewshot == 2)
    assert {len(o.log_likelihoods) for o in mc.outcomes} == {3, 4}
    assert 0 < mc.accuracy < 1
    assert len({round(ll, 3) for o in mc.outcomes for ll in o.log_likelihoods}) > 20


def test_fixed_shapes_score_the_same(scored):
    """The CUDA batching (full batches, power-of-two widths), run here on CPU, changes no result."""
    tasks, _, _, tokenizer, model = scored
    for task in [t for t in tasks if t.config.icl_task_type in ("multiple_choice", "question_answering")]:
        seqs = [s for i in range(len(task.prompts.examples)) for s in task.prompts.request(i, 2).sequences]
        args = (model, seqs, 4, tokenizer.eos_token_id, task.prompts.max_seq_len, torch.device("cpu"),
                task.prompts.max_new_tokens)
        plain, fixed = score(*args, fixed_shapes=False), score(*args, fixed_shapes=True)
        assert [r.generated for r in fixed] == [r.generated for r in plain]
        assert [r.greedy_match for r in fixed] == [r.greedy_match for r in plain]
        assert [r.log_likelihood for r in fixed] == pytest.approx([r.log_likelihood for r in plain], abs=1e-4)
