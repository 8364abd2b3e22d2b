"""Wrong versions of adam_step, the Adam class and adamw_step (exercise 04_adam).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "04_adam"

RIGHT_STEP = '''def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    new_m = beta1 * m + (1 - beta1) * grad
    new_v = beta2 * v + (1 - beta2) * grad**2
    m_hat = new_m / (1 - beta1**t)
    v_hat = new_v / (1 - beta2**t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), new_m, new_v
'''

RIGHT_ADAM = '''class Adam:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            p[...], self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t,
                                                     self.lr, self.beta1, self.beta2, self.eps)
'''

# Written out rather than through adam_step, as a learner who did not reuse it would.
RIGHT_ADAMW = '''def adamw_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
    decayed = param * (1 - lr * weight_decay)
    new_m = beta1 * m + (1 - beta1) * grad
    new_v = beta2 * v + (1 - beta2) * grad**2
    m_hat = new_m / (1 - beta1**t)
    v_hat = new_v / (1 - beta2**t)
    return decayed - lr * m_hat / (np.sqrt(v_hat) + eps), new_m, new_v
'''


def _by_torch(name: str, optimizer: str, decay: str = "") -> str:
    """`name` computed by one step of torch.optim.`optimizer` from the given state."""
    return (f"def {name}(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8{decay}):\n"
            "    import torch\n"
            "    p = torch.tensor(param, dtype=torch.float64, requires_grad=True)\n"
            f"    optimizer = torch.optim.{optimizer}([p], lr=lr, betas=(beta1, beta2), eps=eps"
            + decay.replace("=1e-2", "=weight_decay") + ")\n"
            """    p.grad = torch.tensor(grad, dtype=torch.float64)
    optimizer.state[p] = {"step": torch.tensor(float(t - 1)),
                          "exp_avg": torch.tensor(m, dtype=torch.float64),
                          "exp_avg_sq": torch.tensor(v, dtype=torch.float64)}
    optimizer.step()
    state = optimizer.state[p]
    return p.detach().numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()
""")


_STEP_CALL = ("p[...], self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t,\n"
              "                                                     self.lr, self.beta1, self.beta2, self.eps)\n")

MISTAKES = [
    # ---- adam_step
    Mistake("no_bias_correction", "adam_step", edited(RIGHT_STEP,
        ("m_hat = new_m / (1 - beta1**t)", "m_hat = new_m"),
        ("v_hat = new_v / (1 - beta2**t)", "v_hat = new_v"),
    ), says="without bias correction"),
    Mistake("bias_correction_t_from_zero", "adam_step", edited(RIGHT_STEP,
        ("(1 - beta1**t)", "(1 - beta1**(t - 1))"),
        ("(1 - beta2**t)", "(1 - beta2**(t - 1))"),
    ), says="as if the bias correction used t - 1 = 0"),
    Mistake("eps_inside_sqrt", "adam_step", edited(RIGHT_STEP,
        ("(np.sqrt(v_hat) + eps)", "np.sqrt(v_hat + eps)"),
    ), says="eps is inside the square root"),
    Mistake("betas_swapped", "adam_step", edited(RIGHT_STEP,
        ("new_m = beta1 * m + (1 - beta1) * grad", "new_m = beta2 * m + (1 - beta2) * grad"),
        ("new_v = beta2 * v + (1 - beta2) * grad**2", "new_v = beta1 * v + (1 - beta1) * grad**2"),
        ("(1 - beta1**t)", "(1 - beta2**t)"),
        ("new_v / (1 - beta2**t)", "new_v / (1 - beta1**t)"),
    ), says="beta1 and beta2 look swapped"),
    Mistake("v_accumulates_grad", "adam_step", edited(RIGHT_STEP,
        ("(1 - beta2) * grad**2", "(1 - beta2) * grad"),
        ("np.sqrt(v_hat)", "np.sqrt(np.abs(v_hat))"),
    ), says="running average of the squared gradient"),
    Mistake("hard_coded_lr", "adam_step", edited(RIGHT_STEP,
        ("return param - lr * ", "return param - 1e-3 * "),
    ), says="computed as if lr=0.001"),
    Mistake("steps_uphill", "adam_step", edited(RIGHT_STEP,
        ("return param - lr * ", "return param + lr * "),
    ), says="along the gradient instead of against it"),
    Mistake("returns_moments_first", "adam_step", edited(RIGHT_STEP,
        ("return param - lr * m_hat / (np.sqrt(v_hat) + eps), new_m, new_v",
         "return new_m, new_v, param - lr * m_hat / (np.sqrt(v_hat) + eps)"),
    ), says="returns them in another order"),
    # ---- Adam
    Mistake("shared_state", "Adam", edited(RIGHT_ADAM,
        ("self.m = [np.zeros_like(p) for p in self.params]", "self.m = 0.0"),
        ("self.v = [np.zeros_like(p) for p in self.params]", "self.v = 0.0"),
        ("p[...], self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t,",
         "p[...], self.m, self.v = adam_step(p, g, self.m, self.v, self.t,"),
    ), says="all shared one m and one v"),
    Mistake("t_starts_at_zero", "Adam", edited(RIGHT_ADAM,
        ("        self.t += 1\n        for", "        for"),
        (_STEP_CALL, _STEP_CALL + "        self.t += 1\n"),
    ), says="The first step used t = 0"),
    Mistake("t_per_parameter", "Adam", edited(RIGHT_ADAM,
        ("        self.t += 1\n        for i, (p, g) in enumerate(zip(self.params, grads)):\n",
         "        for i, (p, g) in enumerate(zip(self.params, grads)):\n            self.t += 1\n"),
    ), says="once per parameter instead of once per call"),
    Mistake("not_in_place", "Adam", edited(RIGHT_ADAM,
        ("p[...], self.m[i], self.v[i] = ", "self.params[i], self.m[i], self.v[i] = "),
    ), says="must update them in place"),
    Mistake("state_not_kept", "Adam", edited(RIGHT_ADAM,
        ("adam_step(p, g, self.m[i], self.v[i], self.t,", "adam_step(p, g, np.zeros_like(p), np.zeros_like(p), self.t,"),
    ), says="must carry over between steps"),
    Mistake("ignores_hyperparameters", "Adam", edited(RIGHT_ADAM,
        ("self.t,\n                                                     self.lr, self.beta1, self.beta2, self.eps)",
         "self.t)"),
    ), says="not those passed to Adam(...)"),
    Mistake("one_state_array_for_all", "Adam", edited(RIGHT_ADAM,
        ("self.m = [np.zeros_like(p) for p in self.params]", "self.m = np.zeros_like(self.params[0])"),
        ("self.v = [np.zeros_like(p) for p in self.params]", "self.v = np.zeros_like(self.params[0])"),
        ("p[...], self.m[i], self.v[i] = adam_step(p, g, self.m[i], self.v[i], self.t,",
         "p[...], self.m, self.v = adam_step(p, g, self.m, self.v, self.t,"),
    ), says="all shared one m and one v"),
    # ---- adamw_step
    Mistake("adamw_l2_in_gradient", "adamw_step", edited(RIGHT_ADAMW,
        ("    decayed = param * (1 - lr * weight_decay)\n", "    grad = grad + weight_decay * param\n"),
        ("return decayed - lr * ", "return param - lr * "),
    ), says="went into the gradient"),
    Mistake("adamw_decay_not_scaled_by_lr", "adamw_step", edited(RIGHT_ADAMW,
        ("param * (1 - lr * weight_decay)", "param * (1 - weight_decay)"),
    ), says="not scaled by the learning rate"),
    Mistake("adamw_decay_after_update", "adamw_step", edited(RIGHT_ADAMW,
        ("    decayed = param * (1 - lr * weight_decay)\n", ""),
        ("return decayed - lr * m_hat / (np.sqrt(v_hat) + eps), new_m, new_v",
         "return (param - lr * m_hat / (np.sqrt(v_hat) + eps)) * (1 - lr * weight_decay), new_m, new_v"),
    ), says="applied after the Adam step"),
    Mistake("adamw_no_bias_correction", "adamw_step", edited(RIGHT_ADAMW,
        ("m_hat = new_m / (1 - beta1**t)", "m_hat = new_m"),
        ("v_hat = new_v / (1 - beta2**t)", "v_hat = new_v"),
    ), says="without bias correction"),
    # torch's own optimizers give the right step: the exercise is to write it.
    Mistake("adam_step_by_torch", "adam_step", _by_torch("adam_step", "Adam"),
            says="which does the exercise for you"),
    Mistake("adamw_step_by_torch", "adamw_step", _by_torch("adamw_step", "AdamW", ", weight_decay=1e-2"),
            says="which does the exercise for you"),
]
