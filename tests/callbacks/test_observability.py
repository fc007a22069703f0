"""The console progress lines/bar and the throughput/MFU numbers, in a real Composer Trainer (tiny MPT)."""
import fcntl
import io
import json
import os
import re
import struct
import termios
import threading

import pytest
import torch
from composer import Trainer
from composer.callbacks.speed_monitor import get_gpu_flops_available
from composer.loggers import InMemoryLogger

from llmtrain import builders
from llmtrain.loggers.metrics_jsonl import MetricsJsonl, drop_torn_tail
from llmtrain.loggers.progress import Progress, human
from llmtrain.errors import UserError
from llmtrain.models import ComposerMPT
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.registry import callbacks

SEQ, BATCH, VOCAB = 32, 4, 512


def tiny_mpt() -> ComposerMPT:
    torch.manual_seed(0)
    return ComposerMPT(MPTConfig(d_model=32, n_heads=2, n_layers=1, vocab_size=VOCAB, max_seq_len=SEQ,
                                 attn_config={"attn_impl": "torch"}))


def loader(samples: int):
    section = {"name": "synthetic", "max_seq_len": SEQ, "vocab_size": VOCAB, "num_samples": samples}
    return builders.build_dataloader(section, "train_loader", None, BATCH)


def fit(steps: int, loggers: list, callbacks_=(), **kwargs) -> Trainer:
    model = tiny_mpt()
    trainer = Trainer(model=model, train_dataloader=loader(1000), max_duration=f"{steps}ba",
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.1), loggers=loggers,
                      callbacks=list(callbacks_), device="cpu", progress_bar=False, log_to_console=False, **kwargs)
    trainer.fit()
    trainer.close()
    return trainer


STEP_LINE = re.compile(r"^step (\d+)/5 \((\d+)%\) \| loss \d+\.\d{4} \| lr 1\.00e-01 \| [\d.]+k? tok/s \| "
                       r"([\d.]+k?) tok \| \d:\d\d:\d\d elapsed, eta (\d:\d\d:\d\d|\?)$")


def test_plain_lines_every_interval_with_eval_and_summary():
    out = io.StringIO()  # not a terminal: lines only, no bar
    fit(5, [Progress("2ba", stream=out)], eval_dataloader=loader(8), eval_interval="2ba")
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0].split(" |")[0] for line in lines] == [
        "step 2/5 (40%)", "eval @ step 2/5", "step 4/5 (80%)", "eval @ step 4/5",
        "step 5/5 (100%)",  # the last step always gets a line
        "eval @ step 5/5",  # Composer evaluates again at the end when the interval does not divide it
        "done"]
    for line in (lines[0], lines[2], lines[4]):
        step, percent, tokens, eta = STEP_LINE.match(line).groups()
        assert int(percent) == 20 * int(step) and tokens == human(int(step) * BATCH * SEQ)
    assert STEP_LINE.match(lines[4]).group(4) == "0:00:00"
    for line in (lines[1], lines[3], lines[5]):
        assert re.fullmatch(r"eval @ step \d/5: loss \d+\.\d{4} \| ppl \d+\.\d", line), line
    assert re.fullmatch(r"done: step 5, 640 tokens, \d:\d\d:\d\d in this process, [\d.]+k? tok/s over the run",
                        lines[6])


def test_mfu_from_speed_monitor_shows_in_the_line():
    out = io.StringIO()
    speed = callbacks.get("speed_monitor", "callbacks.speed_monitor").build({"window_size": 1,
                                                                          "gpu_flops_available": 1e9})
    fit(3, [Progress(1, stream=out)], [speed])
    lines = out.getvalue().splitlines()
    assert "mfu" not in lines[0]  # the window is not full after the first step
    assert re.search(r" \| mfu \d+\.\d% \| ", lines[1]) and re.search(r" \| mfu \d+\.\d% \| ", lines[2])


def _pty_with_width(cols: int):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    return master, os.fdopen(slave, "w")


def test_bar_when_stdout_is_a_terminal():
    master, terminal = _pty_with_width(150)
    chunks = []
    reader = threading.Thread(target=lambda: [chunks.append(c) for c in iter(lambda: _read(master), b"")])
    reader.start()  # drain the terminal while the run writes to it
    try:
        fit(4, [Progress(2, stream=terminal)])  # bar=None: decided by isatty()
    finally:
        terminal.close()
        reader.join(timeout=30)
        os.close(master)
    screen = b"".join(chunks).decode()
    assert re.search(r"100%\|█+\| 4/4 \[", screen), screen  # tqdm's bar, final state
    assert "loss " in screen.split("4/4 [")[-1]  # the postfix: loss, lr, tokens
    assert re.search(r"step 2/4 \(50%\) \| loss", screen) and re.search(r"step 4/4 \(100%\) \| loss", screen)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO once the terminal side is closed
        return b""


def test_no_bar_when_asked_for_none_even_on_a_terminal():
    master, terminal = _pty_with_width(150)
    try:
        progress = Progress(1, bar=False, stream=terminal)
        fit(1, [progress])
        terminal.flush()
        screen = os.read(master, 65536).decode()
    finally:
        terminal.close()
        os.close(master)
    assert "step 1/1 (100%)" in screen and "|█" not in screen and "it/s" not in screen


def test_human_numbers():
    assert [human(n) for n in (256, 512.0, 1234, 98765.4, 4.5e6, 2.25e9, 0.123)] == \
        ["256", "512", "1.23k", "98.77k", "4.50M", "2.25G", "0.123"]


@pytest.mark.parametrize("interval", ["1ep", "0ba", "ten"])
def test_console_log_interval_must_be_batches(interval):
    with pytest.raises(UserError, match=rf"^console_log_interval: '{interval}' must be a number of batches, e\.g\. 10ba$"):
        Progress(interval)


def test_mfu_uses_the_models_flops_per_batch(tmp_path):
    """speed_monitor (our registry name) divides ComposerMPT.flops_per_batch-based FLOP/s by the peak it is
    given; metrics.jsonl carries throughput/device/mfu and throughput/device/tokens_per_sec."""
    memory = InMemoryLogger()
    peak = 1e9
    speed = callbacks.get("speed_monitor", "callbacks.speed_monitor").build({"window_size": 2,
                                                                          "gpu_flops_available": peak})
    trainer = fit(4, [memory, MetricsJsonl(tmp_path / "m.jsonl")], [speed])
    model = trainer.state.model
    batch_flops = model.flops_per_batch({"input_ids": torch.zeros(BATCH, SEQ, dtype=torch.int64)})
    last = {k: v[-1][1] for k, v in memory.data.items()}
    assert last["throughput/flops_per_sec"] == pytest.approx(batch_flops * last["throughput/batches_per_sec"])
    assert last["throughput/device/mfu"] == pytest.approx(last["throughput/device/flops_per_sec"] / peak)
    assert last["throughput/device/tokens_per_sec"] == pytest.approx(BATCH * SEQ * last["throughput/batches_per_sec"])
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert "throughput/device/mfu" not in records[1]  # window_size 2: from the third step on
    assert records[-1]["throughput/device/mfu"] == pytest.approx(last["throughput/device/mfu"])
    assert records[-1]["tokens_per_sec"] > 0


def test_a_cut_short_last_record_is_dropped_before_a_resumed_run_appends(tmp_path):
    """A crash in the middle of a write leaves a line without its newline; the next run must not glue its
    first record onto it (every line parses, the whole records before it are kept)."""
    path = tmp_path / "m.jsonl"
    whole = json.dumps({"step": 1, "loss": 2.5}) + "\n"
    path.write_text(whole + '{"step": 2, "loss": 2.')
    fit(2, [MetricsJsonl(path)])
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == whole
    assert [json.loads(line)["step"] for line in lines] == [1, 1, 2]  # this run's steps count from 1 again


@pytest.mark.parametrize("content", ["", "x" * 70000, "{}\n" * 30000])
def test_drop_torn_tail_over_chunk_boundaries(tmp_path, content):
    path = tmp_path / "m.jsonl"
    path.write_text(content + "partial")
    keep = content[:content.rfind("\n") + 1]
    assert drop_torn_tail(path) == len(content) + len("partial") - len(keep)
    assert path.read_text() == keep
    assert drop_torn_tail(path) == 0 and path.read_text() == keep


@pytest.mark.skipif(torch.cuda.is_available(), reason="Composer looks up the GPU's peak whenever CUDA is "
                    "present, even for a CPU run")
def test_no_mfu_on_cpu_without_a_given_peak(tmp_path):
    memory = InMemoryLogger()
    fit(3, [memory], [callbacks.get("speed_monitor", "").build({"window_size": 1})])
    assert "throughput/device/flops_per_sec" in memory.data and "throughput/device/mfu" not in memory.data


# Dense bf16 tensor-core peaks (Composer's table: NVIDIA's sparse datasheet numbers halved).
PEAKS = {"h100 80gb hbm3": 989.5e12, "h100 pcie": 756.5e12, "h200": 989.5e12, "a100": 312e12}


@pytest.mark.gpu
def test_gpu_peak_is_detected_under_amp_bf16():
    """On the device machine: the peak speed_monitor divides by under amp_bf16 (H100 SXM: 989.5 TFLOP/s)."""
    name = torch.cuda.get_device_name().lower()
    expected = next((peak for key, peak in PEAKS.items() if key in name), None)
    if expected is None:
        pytest.skip(f"no expected peak written down for {name}")
    model = tiny_mpt()
    trainer = Trainer(model=model, train_dataloader=loader(100), max_duration="1ba", device="gpu",
                      precision="amp_bf16", progress_bar=False, log_to_console=False)
    assert get_gpu_flops_available(trainer.state) == expected
    trainer.close()
