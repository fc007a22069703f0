"""Downstream evaluation: in-context-learning (ICL) tasks in llm-foundry's formats, scored during
training (`icl_tasks:` in a recipe, every `eval_interval`) and on any checkpoint (scripts/eval.py).

The pipeline, one module per step:
  tasks.py       the `icl_tasks:` / `eval_gauntlet:` config sections (validated with the recipe)
  task_files.py  a task's jsonl file (local or s3://) → checked examples
  prompts.py     examples → few-shot prompts → token sequences to score
  scoring.py     token sequences → log-likelihoods, greedy matches, generations; batched, split over ranks
  metrics.py     per-sequence results → per-example outcomes → accuracy; the gauntlet's averages
  callback.py    the Composer callback that runs it all during training
  checkpoints.py scripts/eval.py's side: a model from a checkpoint or a Hugging Face folder, the table
"""
