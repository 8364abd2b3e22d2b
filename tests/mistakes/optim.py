"""Wrong versions of adam_step and the Adam class (exercise 04_adam)."""
from . import Mistake

EXERCISE = "04_adam"

STEP_SIGNATURE = "def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):\n"


def _step(body: str) -> str:
    return STEP_SIGNATURE + body


def _adam(init: str, step: str) -> str:
    return ("class Adam:\n"
            "    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):\n" + init
            + "\n    def step(self, grads):\n" + step)


GOOD_INIT = """        self.params = list(params)
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
"""

MISTAKES = [
    # ---- adam_step
    Mistake("no_bias_correction", "adam_step", _step("""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    return param - lr * m / (np.sqrt(v) + eps), m, v
"""), says="without bias correction"),
    Mistake("bias_correction_t_from_zero", "adam_step", _step("""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**(t - 1))
    v_hat = v / (1 - beta2**(t - 1))
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
"""), says="as if the bias correction used t - 1 = 0"),
    Mistake("eps_inside_sqrt", "adam_step", _step("""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return param - lr * m_hat / np.sqrt(v_hat + eps), m, v
"""), says="eps is inside the square root"),
    Mistake("betas_swapped", "adam_step", _step("""
    m = beta2 * m + (1 - beta2) * grad
    v = beta1 * v + (1 - beta1) * grad**2
    m_hat = m / (1 - beta2**t)
    v_hat = v / (1 - beta1**t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
"""), says="beta1 and beta2 look swapped"),
    Mistake("v_accumulates_grad", "adam_step", _step("""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return param - lr * m_hat / (np.sqrt(np.abs(v_hat)) + eps), m, v
"""), says="running average of the squared gradient"),
    Mistake("hard_coded_lr", "adam_step", _step("""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return param - 1e-3 * m_hat / (np.sqrt(v_hat) + eps), m, v
"""), says="computed as if lr=0.001"),
    Mistake("steps_uphill", "adam_step", _step("""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return param + lr * m_hat / (np.sqrt(v_hat) + eps), m, v
"""), says="along the gradient instead of against it"),
    Mistake("returns_moments_first", "adam_step", _step("""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return m, v, param - lr * m_hat / (np.sqrt(v_hat) + eps)
"""), says="returns them in another order"),
    # ---- Adam
    Mistake("shared_state", "Adam", _adam("""        self.params = list(params)
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = 0.0
        self.v = 0.0
        self.t = 0
""", """        self.t += 1
        for p, g in zip(self.params, grads):
            new_p, self.m, self.v = adam_step(p, g, self.m, self.v, self.t,
                                              self.lr, self.beta1, self.beta2, self.eps)
            p[...] = new_p
"""), says="all shared one m and one v"),
    Mistake("t_starts_at_zero", "Adam", _adam(GOOD_INIT, """        for i, (p, g) in enumerate(zip(self.params, grads)):
            p[...], self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t,
                                                     self.lr, self.beta1, self.beta2, self.eps)
        self.t += 1
"""), says="The first step used t = 0"),
    Mistake("t_per_parameter", "Adam", _adam(GOOD_INIT, """        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.t += 1
            p[...], self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t,
                                                     self.lr, self.beta1, self.beta2, self.eps)
"""), says="once per parameter instead of once per call"),
    Mistake("not_in_place", "Adam", _adam(GOOD_INIT, """        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.params[i], self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t,
                                                             self.lr, self.beta1, self.beta2, self.eps)
"""), says="must update them in place"),
    Mistake("state_not_kept", "Adam", _adam(GOOD_INIT, """        self.t += 1
        for p, g in zip(self.params, grads):
            m, v = np.zeros_like(p), np.zeros_like(p)
            p[...], m, v = adam_step(p, g, m, v, self.t, self.lr, self.beta1, self.beta2, self.eps)
"""), says="must carry over between steps"),
    Mistake("ignores_hyperparameters", "Adam", _adam(GOOD_INIT, """        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            p[...], self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t)
"""), says="not those passed to Adam(...)"),
    Mistake("one_state_array_for_all", "Adam", _adam("""        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.m = np.zeros_like(self.params[0])
        self.v = np.zeros_like(self.params[0])
        self.t = 0
""", """        self.t += 1
        for p, g in zip(self.params, grads):
            p[...], self.m, self.v = adam_step(p, g, self.m, self.v, self.t,
                                               self.lr, self.beta1, self.beta2, self.eps)
"""), says="all shared one m and one v"),
    # torch's own Adam gives the right step: the exercise is to write it.
    Mistake("adam_step_by_torch", "adam_step", _step("""
    import torch
    p = torch.tensor(param, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([p], lr=lr, betas=(beta1, beta2), eps=eps)
    p.grad = torch.tensor(grad, dtype=torch.float64)
    optimizer.state[p] = {"step": torch.tensor(float(t - 1)),
                          "exp_avg": torch.tensor(m, dtype=torch.float64),
                          "exp_avg_sq": torch.tensor(v, dtype=torch.float64)}
    optimizer.step()
    state = optimizer.state[p]
    return p.detach().numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()
"""), says="which does the exercise for you"),
]
