"""Checkpoints you can trust: exact resume, resume only from complete checkpoints, reading without running code.

One module per concern (docs/checkpoints.md describes what Composer writes and what this adds):

  safe.py       reading pickles without running code; Composer's per-file validation hook
  folder.py     save folders (local or s3://): listing, atomic writes, `repair_latest`
  resume.py     the one `ResumePlan` of a run: what it loads, its format, Composer's load arguments
  callbacks.py  `ResumeRng`, `ModelRecipe`, and loading into callbacks that gained state later
  reader.py     `read_checkpoint`: tensors and objects of a checkpoint, without Composer
  uploads.py    checkpoint uploads that wait out an object-store outage (llmtrain/retry.py's policy)
  disk_full.py  a full disk while saving (known by the saver's own marker) as one line

Exporting a checkpoint as a Hugging Face folder is llmtrain/hf_export.py. What the package exports here is
what scripts and tests use most; the rest is in the modules.
"""
from llmtrain.checkpoint.callbacks import ModelRecipe, ResumeRng
from llmtrain.checkpoint.folder import LATEST, read_beside_checkpoints, repair_latest, write_beside_checkpoints
from llmtrain.checkpoint.reader import MODEL_PREFIX, CheckpointContents, read_checkpoint
from llmtrain.checkpoint.resume import ResumePlan, ResumeSource, check_load_path
from llmtrain.checkpoint.safe import (METADATA, UnsafeCheckpoint, read_metadata, safe_torch_load,
                                      validate_checkpoint_file)

__all__ = ["LATEST", "METADATA", "MODEL_PREFIX", "CheckpointContents", "ModelRecipe", "ResumePlan", "ResumeRng",
           "ResumeSource", "UnsafeCheckpoint", "check_load_path", "read_beside_checkpoints", "read_checkpoint",
           "read_metadata", "repair_latest", "safe_torch_load", "validate_checkpoint_file",
           "write_beside_checkpoints"]
