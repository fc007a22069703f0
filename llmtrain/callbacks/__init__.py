"""Callbacks: Composer's monitors by llm-foundry's names (monitors.py), and ours: the data mix (data_mix.py) and
the loss guard (loss_guard.py). Each module registers its own; where a run's numbers go is llmtrain/loggers/."""
