"""Each run's own streaming cache: runs of one recipe never write to the same folder.

A stream with a `remote` downloads into its `local` folder, and mosaicml-streaming lets one live dataset
at a time use a folder ("Reused local directory"). The same recipe run twice at once (a sweep) or two
node ranks of one run on one host would share it. So in a training run a `text` loader's stream with a
`remote` caches in `<local>/<run_name>/node<node rank>/` (then `split`, as before): the recipe's `local`
is the cache root of all runs. A relaunch of the run (autoresume) finds its own cache again; another run
downloads its own copy. A stream without a `remote` reads its `local` folder in place, shared by any
number of runs: streaming does not write to it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def run_cache_dir(local: str, run_name: str, node_rank: int) -> str:
    return str(Path(local, run_name, f"node{node_rank}"))


def _scoped_stream(stream: dict, run_name: str, node_rank: int) -> dict:
    if not (stream.get("remote") and stream.get("local")):
        return stream
    return {**stream, "local": run_cache_dir(stream["local"], run_name, node_rank)}


def scoped_to_run(section: Optional[dict], run_name: str, node_rank: int) -> Optional[dict]:
    """A loader section (`train_loader`, `eval_loader`) with the caches of its remote streams moved into
    this run's own folders; any other section as it is."""
    if not section or section.get("name") != "text" or not isinstance(section.get("dataset"), dict):
        return section
    dataset = section["dataset"]
    if isinstance(dataset.get("streams"), dict):
        streams = {name: _scoped_stream(s, run_name, node_rank) if isinstance(s, dict) else s
                   for name, s in dataset["streams"].items()}
        dataset = {**dataset, "streams": streams}
    else:
        dataset = _scoped_stream(dataset, run_name, node_rank)
    return {**section, "dataset": dataset}
