"""llmref.optim against an independent reference: torch.optim.Adam and torch.optim.AdamW in
float64, one step from a given state and whole trajectories of 100 and more steps, with
gradients computed in NumPy."""
import numpy as np
import pytest
import torch

from llmref.optim import Adam, adam_step, adamw_step

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


def _torch_step_from(param, grad, m, v, t, lr, betas, eps, weight_decay=None):
    """One torch.optim.Adam step (torch.optim.AdamW with a weight_decay) from a given state
    (m, v after t - 1 steps)."""
    p = torch.tensor(param, requires_grad=True)
    if weight_decay is None:
        opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps)
    else:
        opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if t > 1:
        opt.state[p] = {"step": torch.tensor(float(t - 1)),
                        "exp_avg": torch.tensor(m), "exp_avg_sq": torch.tensor(v)}
    p.grad = torch.tensor(grad)
    opt.step()
    state = opt.state[p]
    return p.detach().numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()


# weight_decay None: adam_step against torch.optim.Adam; a number: adamw_step against
# torch.optim.AdamW. The same tolerance: decoupled decay adds one multiplication,
# param * (1 - lr * weight_decay), which torch computes in the same order.
@pytest.mark.parametrize("weight_decay", [None, 0.0, 1e-2, 0.1, 0.5],
                         ids=lambda d: "Adam" if d is None else f"AdamW-{d}")
@pytest.mark.parametrize("hyper", [*HYPER, AGGRESSIVE], ids=lambda h: f"lr={h['lr']}")
@pytest.mark.parametrize("t", [1, 2, 7, 1000])
def test_one_step_matches_torch(hyper, t, weight_decay):
    rng = np.random.default_rng(t)
    shape = (3, 5)
    param = rng.standard_normal(shape)
    grad = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 0, shape)
    m = np.zeros(shape) if t == 1 else rng.standard_normal(shape) * 0.1
    v = np.zeros(shape) if t == 1 else rng.standard_normal(shape) ** 2 * 0.01
    kwargs = dict(lr=hyper["lr"], beta1=hyper["betas"][0], beta2=hyper["betas"][1], eps=hyper["eps"])
    if weight_decay is None:
        ours = adam_step(param, grad, m, v, t, **kwargs)
    else:
        ours = adamw_step(param, grad, m, v, t, **kwargs, weight_decay=weight_decay)
    theirs = _torch_step_from(param, grad, m, v, t, **hyper, weight_decay=weight_decay)
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


def test_step_updates_the_callers_arrays_in_place():
    p = np.ones(3)
    Adam([p], lr=0.1).step([np.ones(3)])
    np.testing.assert_allclose(p, 0.9)  # at t = 1 the step is lr * sign(grad)


# ---------------------------------------------------------------------------- AdamW

def test_adamw_defaults_are_torchs():
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(adamw_step).parameters.items()
                if p.default is not inspect.Parameter.empty}
    torch_defaults = torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).defaults
    assert defaults["weight_decay"] == torch_defaults["weight_decay"]
    assert (defaults["beta1"], defaults["beta2"]) == tuple(torch_defaults["betas"])
    assert defaults["lr"] == torch_defaults["lr"] and defaults["eps"] == torch_defaults["eps"]


def test_adamw_arguments_are_left_unchanged():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(4) for _ in range(3)] + [rng.standard_normal(4) ** 2]
    kept = [a.copy() for a in arrays]
    adamw_step(*arrays, t=3, weight_decay=0.1)
    for a, b in zip(arrays, kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("weight_decay", [0.1, 0.5])
@pytest.mark.parametrize("hyper", HYPER, ids=lambda h: f"lr={h['lr']}")
def test_200_adamw_steps_of_least_squares_match_torch(hyper, weight_decay):
    """mean((X w + b - y)^2) with decoupled weight decay: adamw_step in a loop, its state fed
    back, against torch.optim.AdamW on the same problem; the trajectories agree at every step,
    and the decay visibly changes where they end."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 6))
    y = X @ rng.standard_normal(6) - 1.0 + 0.1 * rng.standard_normal(40)
    params = [np.zeros(6), np.zeros(1)]
    state = [(np.zeros(6), np.zeros(6)), (np.zeros(1), np.zeros(1))]
    tw, tb = (torch.zeros(n, dtype=torch.float64, requires_grad=True) for n in (6, 1))
    theirs = torch.optim.AdamW([tw, tb], **hyper, weight_decay=weight_decay)
    plain = Adam([np.zeros(6), np.zeros(1)], **hyper)
    tX, ty = torch.from_numpy(X), torch.from_numpy(y)
    worst = 0.0
    for t in range(1, 201):
        r = X @ params[0] + params[1] - y
        grads = [2 * X.T @ r / len(y), np.array([2 * r.mean()])]
        for i, g in enumerate(grads):
            params[i], *state[i] = adamw_step(params[i], g, *state[i], t, lr=hyper["lr"],
                                              beta1=hyper["betas"][0], beta2=hyper["betas"][1],
                                              eps=hyper["eps"], weight_decay=weight_decay)
        theirs.zero_grad()
        ((tX @ tw + tb - ty) ** 2).mean().backward()
        theirs.step()
        r_plain = X @ plain.params[0] + plain.params[1] - y
        plain.step([2 * X.T @ r_plain / len(y), np.array([2 * r_plain.mean()])])
        worst = max(worst, np.abs(params[0] - tw.detach().numpy()).max(),
                    np.abs(params[1] - tb.detach().numpy()).max())
    assert worst < TRAJECTORY_TOL
    # A real test: the decay changed the weights (Adam without it ends elsewhere).
    assert np.abs(params[0] - plain.params[0]).max() > 1e3 * TRAJECTORY_TOL


class _AdamWArrays:
    """adamw_step over a list of arrays in place, the state kept here: Adam's interface."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        self.params, self.t = params, 0
        self.state = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        self.hyper = dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)

    def step(self, grads):
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            p[...], *self.state[i] = adamw_step(p, g, *self.state[i], self.t, **self.hyper)


@pytest.mark.parametrize("weight_decay", [None, 0.2], ids=["Adam", "AdamW"])
def test_300_steps_of_several_parameters_match_torch(weight_decay):
    """Three parameters of different shapes, fixed random gradients of sizes 1e-6 .. 1 (where
    the gradient is tiny, AdamW's decay dominates the step)."""
    rng = np.random.default_rng(2)
    shapes = [(4, 3), (5,), (2, 2, 2)]
    params = [rng.standard_normal(s) for s in shapes]
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    hyper = dict(lr=0.01, betas=(0.85, 0.995), eps=1e-7)
    if weight_decay is None:
        ours, theirs = Adam(params, **hyper), torch.optim.Adam(tensors, **hyper)
    else:
        ours = _AdamWArrays(params, **hyper, weight_decay=weight_decay)
        theirs = torch.optim.AdamW(tensors, **hyper, weight_decay=weight_decay)
    for _ in range(300):
        grads = [rng.standard_normal(s) * 10.0 ** rng.uniform(-6, 0, s) for s in shapes]
        ours.step(grads)
        for tensor, g in zip(tensors, grads):
            tensor.grad = torch.from_numpy(g.copy())
        theirs.step()
        for p, tensor in zip(params, tensors):
            np.testing.assert_allclose(p, tensor.detach().numpy(), rtol=0, atol=TRAJECTORY_TOL)


def test_adamw_is_not_adam_with_l2():
    """torch.optim.Adam(weight_decay=...) adds the decay to the gradient (L2); AdamW does not.
    Our adamw_step must be the second: far from the first after a few steps."""
    rng = np.random.default_rng(5)
    param = rng.standard_normal(8)
    grads = [rng.standard_normal(8) * 10.0 ** rng.uniform(-4, 0, 8) for _ in range(20)]
    p, m, v = param.copy(), np.zeros(8), np.zeros(8)
    for t, g in enumerate(grads, start=1):
        p, m, v = adamw_step(p, g, m, v, t, lr=0.05, weight_decay=0.5)
    tensor = torch.tensor(param, requires_grad=True)
    l2 = torch.optim.Adam([tensor], lr=0.05, weight_decay=0.5)
    for g in grads:
        tensor.grad = torch.from_numpy(g.copy())
        l2.step()
    assert np.abs(p - tensor.detach().numpy()).max() > 1e-3

