# GENERATED from solutions/04_adam/04_adam.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Adam and AdamW in NumPy: one Adam step, an Adam optimizer class and one AdamW step (decoupled weight decay): the reference for exercise 04_adam."""
import numpy as np


def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam update of one parameter array, with bias correction, as torch.optim.Adam.

    param, grad, m, v: float arrays of the same shape; m and v are the running averages
    after step t - 1 (zeros before the first step). t: this step's number, 1 for the first.
    Returns (new_param, new_m, new_v); the arguments are left unchanged.
    """
    new_m = beta1 * m + (1 - beta1) * grad
    new_v = beta2 * v + (1 - beta2) * grad**2
    m_hat = new_m / (1 - beta1**t)
    v_hat = new_v / (1 - beta2**t)
    new_param = param - lr * m_hat / (np.sqrt(v_hat) + eps)
    return new_param, new_m, new_v


class Adam:
    """Adam over a list of NumPy arrays, which step() updates in place."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        """params: list of float arrays (the model's parameters); the hyperparameters as
        in adam_step, with betas = (beta1, beta2)."""
        self.params = list(params)
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = [np.zeros_like(p, dtype=float) for p in self.params]
        self.v = [np.zeros_like(p, dtype=float) for p in self.params]
        self.t = 0  # steps taken so far; the first step() makes it 1

    def step(self, grads):
        """Apply one Adam update to every parameter; grads[i] is the gradient of params[i]."""
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            new_p, self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t,
                                                    self.lr, self.beta1, self.beta2, self.eps)
            # Write into the caller's array: the training loop holds a reference to it.
            p[...] = new_p


def adamw_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
    """One AdamW update of one parameter array: Adam with decoupled weight decay, as torch.optim.AdamW.

    param, grad, m, v, t and the hyperparameters as in adam_step; weight_decay: lambda.
    m and v are Adam's, from the plain gradient; the parameter also shrinks by
    lr * weight_decay times its value before this step, outside the adaptive step.
    Returns (new_param, new_m, new_v); the arguments are left unchanged.
    """
    # Adam's step does not depend on the parameter's value: decay first, then step.
    decayed = param * (1 - lr * weight_decay)
    return adam_step(decayed, grad, m, v, t, lr, beta1, beta2, eps)
