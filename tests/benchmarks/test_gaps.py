"""benchmarks/gaps.py: the GPU's idle time in a profiler trace, split by what the host's Python ran."""
import gzip
import json

from benchmarks import gaps


def kernel(ts, dur):
    return {"ph": "X", "cat": "kernel", "name": "k", "ts": ts, "dur": dur}


def frame(name, ts, dur, tid=1):
    return {"ph": "X", "cat": "python_function", "name": name, "ts": ts, "dur": dur, "tid": tid}


def test_idle_time_is_split_by_the_main_threads_innermost_own_frame(tmp_path):
    events = [
        kernel(0, 100), kernel(50, 100), kernel(400, 100), kernel(1000, 10),  # busy 0-150, 400-500, 1000-1010
        frame("composer/trainer/trainer.py(1): _train_loop", 0, 2000),
        frame("llmtrain/optim/lion.py(44): step", 150, 250),  # the whole first gap (150-400)
        frame("torch/_tensor.py(9): item", 160, 200),  # torch's own frame: attributed to the step above it
        frame("composer/core/state.py(894): fsdp_enabled", 500, 500),  # the whole second gap (500-1000)
        *(frame("threading.py(1): wait", t, 1000, tid=2) for t in range(0, 2000, 1000)),  # a thread with fewer frames
    ]
    path = tmp_path / "trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    report = gaps.summarise(gaps.load(str(path)), steps=2, top=5, min_us=20)
    lines = report.splitlines()
    assert lines[0].startswith("window 1.0 ms over 2 steps: GPU busy 0.3 ms, idle 0.8 ms (0.38 ms a step), 2 gaps")
    by_cause = {line.split(None, 1)[1]: float(line.split()[0]) for line in lines[2:4]}
    assert by_cause == {"composer/core/state.py(894): fsdp_enabled": 0.25, "llmtrain/optim/lion.py(44): step": 0.12}


def test_a_trace_without_gpu_work_says_so():
    assert gaps.summarise([frame("x.py(1): f", 0, 10)], steps=1, top=3, min_us=20) == "no GPU activity in the trace"
