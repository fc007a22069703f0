"""DecoupledLionW against a float64 reference written from the update formulas."""
import math

import pytest
import torch

from llmtrain.optim import DecoupledLionW


def reference_lion(params, grads_per_step, lrs, betas, weight_decay):
    """float64 LION with decay scaled by lr / initial_lr, straight from the formulas."""
    beta1, beta2 = betas
    params = [p.double().clone() for p in params]
    moms = [torch.zeros_like(p) for p in params]
    initial_lr = lrs[0]
    for grads, lr in zip(grads_per_step, lrs):
        for p, m, g in zip(params, moms, grads):
            g = g.double()
            p.mul_(1 - (lr / initial_lr) * weight_decay)
            p.sub_(lr * torch.sign(beta1 * m + (1 - beta1) * g))
            m.copy_(beta2 * m + (1 - beta2) * g)
    return params


def run_ours(params, grads_per_step, lrs, betas, weight_decay, foreach, device="cpu"):
    params = [torch.nn.Parameter(p.clone().to(device)) for p in params]
    opt = DecoupledLionW(params, lr=lrs[0], betas=betas, weight_decay=weight_decay, foreach=foreach)
    for grads, lr in zip(grads_per_step, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = g.clone().to(device)
        opt.step()
    return [p.detach().cpu() for p in params]


MODES = [  # (foreach, device): CPU foreach, lion-pytorch per-parameter, CUDA fused Triton kernel
    pytest.param(True, "cpu", id="foreach"),
    pytest.param(False, "cpu", id="per-parameter"),
    pytest.param(True, "cuda", id="fused-cuda", marks=pytest.mark.gpu),
]


@pytest.mark.parametrize("foreach,device", MODES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_float64_reference_over_50_steps(foreach, device, weight_decay):
    gen = torch.Generator().manual_seed(0)
    shapes = [(64, 32), (32,), (7, 3, 5)]
    # Weights at a trained LM's scale (std 0.1): at |p| ~ 1, fp32 rounding alone adds up to ~1e-6 over
    # 50 steps, and the test should measure the update rule, not fp32's spacing.
    params = [0.1 * torch.randn(s, generator=gen) for s in shapes]
    steps = 50
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(steps)]
    # warmup then cosine decay: the decay factor lr/initial_lr moves every step
    lrs = [1e-3 * min(1.0, (i + 1) / 10) * (0.5 + 0.5 * math.cos(math.pi * i / steps)) + 1e-5 for i in range(steps)]
    betas = (0.9, 0.99)
    ours = run_ours(params, grads, lrs, betas, weight_decay, foreach, device)
    ref = reference_lion(params, grads, lrs, betas, weight_decay)
    for o, r in zip(ours, ref):
        assert (o.double() - r).abs().max().item() <= 1e-6
    assert any((o - p).abs().max() > 1e-3 for o, p in zip(ours, params)), "parameters did not move"


def test_weight_decay_follows_schedule_not_lr():
    p = torch.nn.Parameter(torch.ones(4))
    opt = DecoupledLionW([p], lr=1e-2, weight_decay=0.5)
    opt.param_groups[0]["lr"] = 5e-3  # half the initial lr → decay factor 0.5 · 0.5
    p.grad = torch.zeros(4)  # sign(0) = 0: only the decay acts
    opt.step()
    assert torch.allclose(p.detach(), torch.full((4,), 1 - 0.25))


def test_state_dict_round_trip_resumes_exactly():
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(10, generator=gen)
    grads = [torch.randn(10, generator=gen) for _ in range(6)]

    def make():
        p = torch.nn.Parameter(init.clone())
        return p, DecoupledLionW([p], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01)

    p_full, opt_full = make()
    for g in grads:
        p_full.grad = g.clone()
        opt_full.step()

    p_a, opt_a = make()
    for g in grads[:3]:
        p_a.grad = g.clone()
        opt_a.step()
    saved_param, saved_state = p_a.detach().clone(), opt_a.state_dict()
    p_b, opt_b = make()
    with torch.no_grad():
        p_b.copy_(saved_param)
    opt_b.load_state_dict(saved_state)
    for g in grads[3:]:
        p_b.grad = g.clone()
        opt_b.step()
    assert torch.equal(p_b.detach(), p_full.detach())


def test_params_without_grad_are_left_alone():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = DecoupledLionW([a, b], lr=0.1, weight_decay=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3)) and "exp_avg" not in opt.state[b]
    assert not torch.equal(a.detach(), torch.ones(3))
