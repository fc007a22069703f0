"""flash_alibi_attention vs a float64 PyTorch reference: outputs and dq, dk, dv, with and without ALiBi and
documents, grouped-query heads, sequence lengths that are no multiple of the block size.

On CPU the kernels run in Triton's interpreter, on small shapes. The interpreter must be chosen before
triton is first imported (its standard library is jit-decorated at import) and it patches
triton.language for the whole process, so the CPU cases run in one child process: this file run as a
script with TRITON_INTERPRET=1, printing every case's errors as JSON. The `gpu` tests run the same
checks in-process on CUDA, in bf16 at real sizes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def slopes_for(n_heads: int) -> torch.Tensor:
    # MPT's slopes for alibi_bias_max=8; large enough that the bias dominates far keys.
    return torch.pow(2.0, -8.0 * torch.arange(1, n_heads + 1, dtype=torch.float32) / n_heads)


def packed_ids(batch: int, seq: int, lengths: list[int]) -> torch.Tensor:
    """Document ids, one row per batch entry, documents of the given lengths (rotated per row)."""
    rows = []
    for b in range(batch):
        ids, doc = [], 0
        for i in range(seq):
            ids += [doc] * lengths[(b + i) % len(lengths)]
            doc += 1
            if len(ids) >= seq:
                break
        rows.append(torch.tensor(ids[:seq]))
    return torch.stack(rows)


def reference(q, k, v, slopes, sequence_id, scale):
    """Plain float64 attention: softmax(q k^T * scale + ALiBi, causal and document masks) v."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = q @ k.transpose(-1, -2) * scale
    pos = torch.arange(q.shape[2], device=q.device)
    if slopes is not None:
        s = s - slopes.double().to(q.device)[:, None, None] * (pos[:, None] - pos[None, :])
    ok = (pos[:, None] >= pos[None, :])[None, None]
    if sequence_id is not None:
        ok = ok & (sequence_id[:, None, :, None] == sequence_id[:, None, None, :])
    return torch.softmax(s.masked_fill(~ok, float("-inf")), -1) @ v


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def errors(fa, B, H, Hkv, S, D, dtype, device, alibi, lengths, heads_inner=False, seed=0) -> dict[str, float]:
    """Relative errors of `fa.flash_alibi_attention`'s output and gradients against `reference`.
    heads_inner: q, k, v are (B, S, H, D) tensors seen as (B, H, S, D), as a model's projections give them."""
    gen = torch.Generator().manual_seed(seed)
    if heads_inner:
        q, k, v = (torch.randn(B, S, h, D, generator=gen).to(device, dtype).transpose(1, 2).requires_grad_()
                   for h in (H, Hkv, Hkv))
    else:
        q, k, v = (torch.randn(B, h, S, D, generator=gen).to(device, dtype).requires_grad_()
                   for h in (H, Hkv, Hkv))
    do = torch.randn(B, H, S, D, generator=gen).to(device, dtype)
    slopes = slopes_for(H).to(device) if alibi else None
    seq_id = packed_ids(B, S, lengths).to(device) if lengths else None

    out = fa.flash_alibi_attention(q, k, v, slopes=slopes, sequence_id=seq_id)
    assert out.shape == (B, H, S, D) and out.dtype == dtype
    out.backward(do)
    refs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = reference(*refs, slopes, seq_id, D ** -0.5)
    ref.backward(do.double())
    return {"out": rel(out, ref), "dq": rel(q.grad, refs[0].grad), "dk": rel(k.grad, refs[1].grad),
            "dv": rel(v.grad, refs[2].grad)}


def isolation(fa, device="cpu", dtype=torch.float32, B=1, H=2, S=64, D=32, bounds=(20, 45)) -> dict[str, bool]:
    """Gradients from one document's outputs: none reach other documents' q, k, v; some reach its own.
    Gradients are taken twice, to see they are bitwise equal (no atomics)."""
    lo, hi = bounds
    seq_id = torch.cat([torch.zeros(lo), torch.ones(hi - lo), torch.full((S - hi,), 2)]).long()
    seq_id = seq_id.expand(B, S).to(device)
    q, k, v = (torch.randn(B, H, S, D).to(device, dtype).requires_grad_() for _ in range(3))
    grads = []
    for _ in range(2):
        out = fa.flash_alibi_attention(q, k, v, slopes=slopes_for(H).to(device), sequence_id=seq_id)
        grads.append(torch.autograd.grad(out[:, :, lo:hi].sum(), (q, k, v)))
    return {"others_zero": all(not g[:, :, :lo].any() and not g[:, :, hi:].any() for g in grads[0]),
            "own_nonzero": all(bool(g[:, :, lo:hi].any()) for g in grads[0]),
            "deterministic": all(torch.equal(a, b) for a, b in zip(*grads))}


# Documents shorter than a block, one spanning several blocks, boundaries on and off block edges
# (the interpreter's blocks are 16 and 32 long).
LENGTHS = [5, 40, 16, 70, 1, 33]
F32, F16 = torch.float32, torch.float16
INTERPRETER_CASES = {  # name: (tolerance, shape and options); fp32 is exact arithmetic in the interpreter
    "fp32-causal": (1e-4, dict(B=2, H=2, Hkv=2, S=83, D=32, dtype=F32, alibi=False, lengths=None)),
    "fp32-alibi": (1e-4, dict(B=2, H=2, Hkv=2, S=83, D=32, dtype=F32, alibi=True, lengths=None)),
    "fp32-docs": (1e-4, dict(B=2, H=2, Hkv=2, S=83, D=32, dtype=F32, alibi=False, lengths=LENGTHS)),
    "fp32-alibi-docs": (1e-4, dict(B=2, H=2, Hkv=2, S=83, D=32, dtype=F32, alibi=True, lengths=LENGTHS)),
    "fp32-gqa2-alibi-docs": (1e-4, dict(B=1, H=4, Hkv=2, S=70, D=32, dtype=F32, alibi=True, lengths=LENGTHS)),
    "fp32-mqa-alibi": (1e-4, dict(B=1, H=4, Hkv=1, S=70, D=32, dtype=F32, alibi=True, lengths=None)),
    "fp32-d64-aligned-docs-heads-inner": (1e-4, dict(B=2, H=2, Hkv=2, S=200, D=64, dtype=F32, alibi=True,
                                                     lengths=[16, 32, 64, 80], heads_inner=True)),
    "fp16-d64-gqa-alibi-docs": (1e-2, dict(B=1, H=2, Hkv=1, S=96, D=64, dtype=F16, alibi=True,
                                           lengths=[50, 7, 100])),
}


def run_interpreter_cases() -> dict:
    """In the child process (TRITON_INTERPRET=1): every case's errors, or its traceback."""
    import llmtrain.kernels.flash_alibi as fa
    results = {}
    for name, (_, case) in INTERPRETER_CASES.items():
        try:
            results[name] = errors(fa, device="cpu", **case)
        except Exception:
            results[name] = traceback.format_exc()
    try:
        results["isolation"] = isolation(fa)
    except Exception:
        results["isolation"] = traceback.format_exc()
    return results


@pytest.fixture(scope="module")
def interpreted() -> dict:
    import llmtrain
    # The child imports the llmtrain this process has, whichever clone the venv's editable install names.
    path = os.pathsep.join(filter(None, [str(Path(llmtrain.__file__).parents[1]), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, __file__], env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", list(INTERPRETER_CASES))
def test_interpreter_matches_reference(interpreted, name):
    result = interpreted[name]
    assert isinstance(result, dict), result
    tol = INTERPRETER_CASES[name][0]
    assert all(e < tol for e in result.values()), result


def test_interpreter_documents_are_isolated(interpreted):
    result = interpreted["isolation"]
    assert result == {"others_zero": True, "own_nonzero": True, "deterministic": True}, result


def test_document_bounds():
    from llmtrain.kernels import document_bounds
    ids = torch.tensor([[0, 0, 0, 1, 2, 2], [3, 3, 3, 3, 3, 3]])
    start, end = document_bounds(ids)
    assert start.tolist() == [[0, 0, 0, 3, 4, 4], [0] * 6]
    assert end.tolist() == [[3, 3, 3, 4, 6, 6], [6] * 6]
    assert start.dtype == end.dtype == torch.int32


def test_rejects_bad_inputs():
    from llmtrain.kernels import flash_alibi_attention
    q = torch.zeros(1, 4, 8, 64)
    with pytest.raises(ValueError, match="Hkv dividing H"):
        flash_alibi_attention(q, torch.zeros(1, 3, 8, 64), torch.zeros(1, 3, 8, 64))
    with pytest.raises(ValueError, match="head dim"):
        flash_alibi_attention(*(torch.zeros(1, 4, 8, 48),) * 3)
    with pytest.raises(ValueError, match="CUDA"):
        flash_alibi_attention(q, q, q)


DOCS = [512, 300, 700, 1, 129, 406]
GPU_CASES = {  # (B, H, Hkv, S, D), ALiBi, document lengths
    "mha-2048-causal": ((2, 16, 16, 2048, 128), False, None),
    "mha-2048-alibi": ((2, 16, 16, 2048, 128), True, None),
    "mha-2048-docs": ((2, 16, 16, 2048, 128), False, DOCS),
    "mha-2048-alibi-docs": ((2, 16, 16, 2048, 128), True, DOCS),
    "gqa-1000-d64-alibi-docs": ((2, 8, 2, 1000, 64), True, DOCS),
}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_gpu_bf16_matches_reference(name):
    import llmtrain.kernels.flash_alibi as fa
    (B, H, Hkv, S, D), alibi, lengths = GPU_CASES[name]
    result = errors(fa, B, H, Hkv, S, D, torch.bfloat16, "cuda", alibi, lengths)
    assert all(e < 1e-2 for e in result.values()), result


@pytest.mark.gpu
@needs_cuda
def test_gpu_documents_are_isolated_and_deterministic():
    import llmtrain.kernels.flash_alibi as fa
    result = isolation(fa, "cuda", torch.bfloat16, B=2, H=16, S=1536, D=128, bounds=(300, 857))
    assert result == {"others_zero": True, "own_nonzero": True, "deterministic": True}, result


if __name__ == "__main__":
    print(json.dumps(run_interpreter_cases()))
