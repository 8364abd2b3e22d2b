"""Wrong versions of Linear and LayerNorm (exercise 05_modules)."""
from . import Mistake

EXERCISE = "05_modules"

RIGHT_LINEAR_INIT = """
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
"""
RIGHT_LINEAR_FORWARD = """
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return y
"""


def _linear(init: str = RIGHT_LINEAR_INIT, forward: str = RIGHT_LINEAR_FORWARD) -> str:
    return ("class Linear(nn.Module):\n"
            "    def __init__(self, in_features, out_features, bias=True):\n"
            "        super().__init__()\n"
            "        self.in_features = in_features\n"
            "        self.out_features = out_features\n"
            + init.strip("\n") + "\n\n"
            "    def forward(self, x):\n"
            + forward.strip("\n") + "\n")


RIGHT_NORM_INIT = """
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))
"""


def _norm_forward(mean: str = "x.mean(dim=dims, keepdim=True)",
                  var: str = "((x - mean) ** 2).mean(dim=dims, keepdim=True)",
                  x_hat: str = "(x - mean) / torch.sqrt(var + self.eps)",
                  out: str = "x_hat * self.weight + self.bias",
                  dims: str = "tuple(range(-len(self.normalized_shape), 0))") -> str:
    return (f"        dims = {dims}\n"
            f"        mean = {mean}\n"
            f"        var = {var}\n"
            f"        x_hat = {x_hat}\n"
            f"        return {out}\n")


def _norm(init: str = RIGHT_NORM_INIT, forward: str | None = None) -> str:
    return ("class LayerNorm(nn.Module):\n"
            "    def __init__(self, normalized_shape, eps=1e-5):\n"
            "        super().__init__()\n"
            "        if isinstance(normalized_shape, int):\n"
            "            normalized_shape = (normalized_shape,)\n"
            "        self.normalized_shape = tuple(normalized_shape)\n"
            "        self.eps = eps\n"
            + init.strip("\n") + "\n\n"
            "    def forward(self, x):\n"
            + (forward or _norm_forward()))


LINEAR = [
    Mistake("linear_weight_not_transposed", "Linear", _linear(forward="""
        return x @ self.weight + self.bias
"""), says="not transposed"),
    Mistake("linear_weight_stored_in_by_out", "Linear", _linear(init="""
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
""", forward="""
        y = x @ self.weight
        if self.bias is not None:
            y = y + self.bias
        return y
"""), says="It is transposed"),
    Mistake("linear_bias_never_added", "Linear", _linear(forward="""
        return x @ self.weight.T
"""), says="without the bias"),
    Mistake("linear_plain_tensors", "Linear", _linear(init="""
        bound = 1 / math.sqrt(in_features)
        self.weight = torch.empty(out_features, in_features).uniform_(-bound, bound)
        self.bias = torch.empty(out_features).uniform_(-bound, bound) if bias else None
"""), says="plain tensor, not an nn.Parameter"),
    Mistake("linear_bias_despite_bias_false", "Linear", _linear(init="""
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
""", forward="""
        return x @ self.weight.T + self.bias
"""), says="although it was built with bias=False"),
    Mistake("linear_randn_init", "Linear", _linear(init="""
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.randn(out_features))
        else:
            self.register_parameter("bias", None)
"""), says="torch.randn"),
    Mistake("linear_bound_from_out_features", "Linear", _linear(init="""
        bound = 1 / math.sqrt(out_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
"""), says="1/sqrt(out_features)"),
    Mistake("linear_zero_init", "Linear", _linear(init="""
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("bias", None)
"""), says="never become different"),
    Mistake("linear_numpy_init", "Linear", _linear(init="""
        import numpy as np
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.tensor(
            np.random.uniform(-bound, bound, (out_features, in_features)), dtype=torch.float32))
        if bias:
            self.bias = nn.Parameter(torch.tensor(
                np.random.uniform(-bound, bound, out_features), dtype=torch.float32))
        else:
            self.register_parameter("bias", None)
"""), says="torch.manual_seed"),
    Mistake("linear_weight_data_breaks_gradient", "Linear", _linear(forward="""
        y = x @ self.weight.data.T
        if self.bias is not None:
            y = y + self.bias
        return y
"""), says="No gradient reached `weight`"),
]

LAYERNORM = [
    Mistake("layernorm_unbiased_variance", "LayerNorm", _norm(forward=_norm_forward(
        var="x.var(dim=dims, keepdim=True)")), says="unbiased"),
    Mistake("layernorm_eps_outside_sqrt", "LayerNorm", _norm(forward=_norm_forward(
        x_hat="(x - mean) / (torch.sqrt(var) + self.eps)")), says="outside the square root"),
    Mistake("layernorm_fixed_eps", "LayerNorm", _norm(forward=_norm_forward(
        x_hat="(x - mean) / torch.sqrt(var + 1e-5)")), says="use self.eps"),
    Mistake("layernorm_over_batch_axis", "LayerNorm", _norm(forward=_norm_forward(
        dims="0")), says="normalised over dimension 0 instead"),
    Mistake("layernorm_last_dim_only", "LayerNorm", _norm(forward=_norm_forward(
        dims="-1")), says="only the last one is normalised"),
    Mistake("layernorm_no_affine", "LayerNorm", _norm(forward=_norm_forward(
        out="x_hat")), says="weight and bias are not applied"),
    Mistake("layernorm_plain_tensors", "LayerNorm", _norm(init="""
        self.weight = torch.ones(self.normalized_shape)
        self.bias = torch.zeros(self.normalized_shape)
"""), says="plain tensor, not an nn.Parameter"),
    Mistake("layernorm_weight_starts_at_zero", "LayerNorm", _norm(init="""
        self.weight = nn.Parameter(torch.zeros(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))
"""), says="weight all ones"),
    Mistake("layernorm_detached_statistics", "LayerNorm", _norm(forward=_norm_forward(
        mean="x.mean(dim=dims, keepdim=True).detach()",
        var="((x - mean) ** 2).mean(dim=dims, keepdim=True).detach()")),
        says="gradient must flow through them"),
]

MISTAKES = LINEAR + LAYERNORM + [
    # PyTorch's own classes give the right numbers, but they are the exercise done for you.
    Mistake("linear_is_torchs", "Linear", "Linear = nn.Linear\n",
            says="uses nn.Linear, which does the exercise for you"),
    Mistake("layernorm_subclasses_torchs", "LayerNorm",
            "class LayerNorm(nn.LayerNorm):\n    pass\n",
            says="uses nn.LayerNorm, which does the exercise for you"),
]
