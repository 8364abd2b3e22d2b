"""llmref.optim against an independent reference: torch.optim.Adam in float64, one step from a
given state and whole 100-step trajectories, with gradients computed in NumPy."""
import numpy as np
import pytest
import torch

from llmref.optim import Adam, adam_step

# One step, float64 on both sides: torch computes m by lerp and divides sqrt(v) by
# sqrt(1 - beta2**t) where we form sqrt(v / (1 - beta2**t)); the results differ by a few
# ulps (~1e-16 relative), so 1e-12 is a wide margin that still exposes any formula change.
STEP_TOL = 1e-12
# 100 steps: the course promises agreement with torch.optim.Adam to 1e-6. With the
# hyperparameters below we observe at most 4e-16; the rest of the margin is for other
# machines' BLAS, whose summation order changes the NumPy and torch gradients by ~1e-16.
# Adam can magnify such differences: near a minimum the gradients are tiny and
# m / sqrt(v) turns them into steps of size ~lr, so a rounding difference can flip a step's
# sign. With aggressive settings (lr=0.3, betas=(0.5, 0.6)) we measured the gap growing from
# 2e-16 at step 10 to 3e-6 at step 100, which is why the trajectories use ordinary settings.
TRAJECTORY_TOL = 1e-6

HYPER = [dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
         dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6),
         dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8)]
AGGRESSIVE = dict(lr=0.3, betas=(0.5, 0.6), eps=1e-3)  # one step only: see TRAJECTORY_TOL


def _torch_step_from(param, grad, m, v, t, lr, betas, eps):
    """One torch.optim.Adam step from a given state (m, v after t - 1 steps)."""
    p = torch.tensor(param, requires_grad=True)
    opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps)
    if t > 1:
        opt.state[p] = {"step": torch.tensor(float(t - 1)),
                        "exp_avg": torch.tensor(m), "exp_avg_sq": torch.tensor(v)}
    p.grad = torch.tensor(grad)
    opt.step()
    state = opt.state[p]
    return p.detach().numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()


@pytest.mark.parametrize("hyper", [*HYPER, AGGRESSIVE], ids=lambda h: f"lr={h['lr']}")
@pytest.mark.parametrize("t", [1, 2, 7, 1000])
def test_one_step_matches_torch(hyper, t):
    rng = np.random.default_rng(t)
    shape = (3, 5)
    param = rng.standard_normal(shape)
    grad = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 0, shape)
    m = np.zeros(shape) if t == 1 else rng.standard_normal(shape) * 0.1
    v = np.zeros(shape) if t == 1 else rng.standard_normal(shape) ** 2 * 0.01
    ours = adam_step(param, grad, m, v, t, lr=hyper["lr"], beta1=hyper["betas"][0],
                     beta2=hyper["betas"][1], eps=hyper["eps"])
    theirs = _torch_step_from(param, grad, m, v, t, **hyper)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=STEP_TOL, atol=STEP_TOL)


def test_arguments_are_left_unchanged():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(4) for _ in range(3)] + [rng.standard_normal(4) ** 2]
    kept = [a.copy() for a in arrays]
    adam_step(*arrays, t=3)
    for a, b in zip(arrays, kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hyper", HYPER, ids=lambda h: f"lr={h['lr']}")
def test_100_step_least_squares_loop_matches_torch(hyper):
    """Minimise mean((X w + b - y)^2): NumPy computes the gradients for our Adam, autograd
    for torch's; the two parameter trajectories must agree at every step."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 6))
    y = X @ rng.standard_normal(6) - 1.0 + 0.1 * rng.standard_normal(40)
    w, b = np.zeros(6), np.zeros(1)
    ours = Adam([w, b], **hyper)
    tw, tb = torch.zeros(6, dtype=torch.float64, requires_grad=True), \
        torch.zeros(1, dtype=torch.float64, requires_grad=True)
    theirs = torch.optim.Adam([tw, tb], **hyper)
    tX, ty = torch.from_numpy(X), torch.from_numpy(y)
    loss_before = np.mean(y**2)
    worst = 0.0
    for _ in range(100):
        r = X @ w + b - y
        ours.step([2 * X.T @ r / len(y), np.array([2 * r.mean()])])
        theirs.zero_grad()
        ((tX @ tw + tb - ty) ** 2).mean().backward()
        theirs.step()
        worst = max(worst, np.abs(w - tw.detach().numpy()).max(), np.abs(b - tb.detach().numpy()).max())
    assert worst < TRAJECTORY_TOL
    # A real test: training made progress, so the trajectories are not trivially equal.
    assert np.mean((X @ w + b - y) ** 2) < 0.9 * loss_before


def test_100_steps_of_several_parameters_match_torch():
    """Three parameters of different shapes, fixed random gradients of sizes 1e-6 .. 1."""
    rng = np.random.default_rng(2)
    shapes = [(4, 3), (5,), (2, 2, 2)]
    params = [rng.standard_normal(s) for s in shapes]
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    ours = Adam(params, lr=0.01, betas=(0.85, 0.995), eps=1e-7)
    theirs = torch.optim.Adam(tensors, lr=0.01, betas=(0.85, 0.995), eps=1e-7)
    for _ in range(100):
        grads = [rng.standard_normal(s) * 10.0 ** rng.uniform(-6, 0, s) for s in shapes]
        ours.step(grads)
        for tensor, g in zip(tensors, grads):
            tensor.grad = torch.from_numpy(g.copy())
        theirs.step()
        for p, tensor in zip(params, tensors):
            np.testing.assert_allclose(p, tensor.detach().numpy(), rtol=0, atol=TRAJECTORY_TOL)


def test_step_updates_the_callers_arrays_in_place():
    p = np.ones(3)
    Adam([p], lr=0.1).step([np.ones(3)])
    np.testing.assert_allclose(p, 0.9)  # at t = 1 the step is lr * sign(grad)
