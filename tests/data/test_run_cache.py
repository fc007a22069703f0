"""Which streams get a run's own cache folder, and where (llmtrain/data/run_cache.py)."""
from llmtrain.data.run_cache import scoped_to_run


def test_remote_streams_cache_under_run_and_node_local_only_streams_are_read_in_place():
    mix = {"name": "text", "num_workers": 0, "dataset": {"max_seq_len": 8, "streams": {
        "web": {"remote": "s3://b/web", "local": "/cache/web", "proportion": 0.7},
        "code": {"local": "/data/code", "proportion": 0.3}}}}
    scoped = scoped_to_run(mix, "lr-3e-4", 1)
    assert scoped["dataset"]["streams"] == {
        "web": {"remote": "s3://b/web", "local": "/cache/web/lr-3e-4/node1", "proportion": 0.7},
        "code": {"local": "/data/code", "proportion": 0.3}}
    assert scoped["num_workers"] == 0 and mix["dataset"]["streams"]["web"]["local"] == "/cache/web"  # a copy

    single = {"name": "text", "dataset": {"max_seq_len": 8, "remote": "data/tiny", "local": "/c", "split": "train"}}
    assert scoped_to_run(single, "a", 0)["dataset"] == {"max_seq_len": 8, "remote": "data/tiny",
                                                        "local": "/c/a/node0", "split": "train"}
    synthetic = {"name": "synthetic", "vocab_size": 10}
    assert scoped_to_run(synthetic, "a", 0) is synthetic and scoped_to_run(None, "a", 0) is None
