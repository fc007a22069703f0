"""Data: offline tokenizers, data prep (scripts/data_prep.py) and the `text` train/eval loader (text.py, which
registers itself; llmtrain.builders imports it). Importing this package imports nothing else, so data prep and
its worker processes do not pay for importing Composer and streaming.
"""
