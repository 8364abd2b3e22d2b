"""Wrong versions of Linear and LayerNorm (exercise 05_modules).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
Most instructive first (the first three of each class go through real nbgrader); the
library shortcuts last.
"""
from . import Mistake, edited

EXERCISE = "05_modules"

RIGHT_LINEAR = '''class Linear(nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return y
'''

RIGHT_LAYERNORM = '''class LayerNorm(nn.Module):
    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))

    def forward(self, x):
        dims = tuple(range(-len(self.normalized_shape), 0))
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return x_hat * self.weight + self.bias
'''


# The pieces of RIGHT_LINEAR that several mistakes change.
WEIGHT_DRAW = "torch.empty(out_features, in_features).uniform_(-bound, bound)"
BIAS_DRAW = "torch.empty(out_features).uniform_(-bound, bound)"
IF_BIAS = ("        if bias:\n"
           "            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))\n"
           "        else:\n"
           "            self.register_parameter(\"bias\", None)\n")
ADD_BIAS = ("        if self.bias is not None:\n"
            "            y = y + self.bias\n")

LINEAR = [
    Mistake("linear_weight_not_transposed", "Linear", edited(
        RIGHT_LINEAR, ("y = x @ self.weight.T", "y = x @ self.weight"),
    ), says="not transposed"),
    # Stored the other way round, and used consistently: the right function, but no
    # checkpoint fits it.
    Mistake("linear_weight_stored_in_by_out", "Linear", edited(
        RIGHT_LINEAR,
        (WEIGHT_DRAW, "torch.empty(in_features, out_features).uniform_(-bound, bound)"),
        ("y = x @ self.weight.T", "y = x @ self.weight"),
    ), says="It is transposed"),
    Mistake("linear_bias_never_added", "Linear", edited(
        RIGHT_LINEAR, (ADD_BIAS, ""),
    ), says="without the bias"),
    Mistake("linear_plain_tensors", "Linear", edited(
        RIGHT_LINEAR,
        (f"self.weight = nn.Parameter({WEIGHT_DRAW})", f"self.weight = {WEIGHT_DRAW}"),
        (f"self.bias = nn.Parameter({BIAS_DRAW})", f"self.bias = {BIAS_DRAW}"),
    ), says="plain tensor, not an nn.Parameter"),
    Mistake("linear_bias_despite_bias_false", "Linear", edited(
        RIGHT_LINEAR, (IF_BIAS, f"        self.bias = nn.Parameter({BIAS_DRAW})\n"),
    ), says="although it was built with bias=False"),
    Mistake("linear_randn_init", "Linear", edited(
        RIGHT_LINEAR,
        (WEIGHT_DRAW, "torch.randn(out_features, in_features)"),
        (BIAS_DRAW, "torch.randn(out_features)"),
    ), says="torch.randn"),
    Mistake("linear_bound_from_out_features", "Linear", edited(
        RIGHT_LINEAR, ("bound = 1 / math.sqrt(in_features)", "bound = 1 / math.sqrt(out_features)"),
    ), says="1/sqrt(out_features)"),
    Mistake("linear_zero_init", "Linear", edited(
        RIGHT_LINEAR,
        (WEIGHT_DRAW, "torch.zeros(out_features, in_features)"),
        (BIAS_DRAW, "torch.zeros(out_features)"),
    ), says="never become different"),
    # The right distribution from the wrong generator: torch.manual_seed does not reach it.
    Mistake("linear_numpy_init", "Linear", edited(
        RIGHT_LINEAR,
        ("        bound = 1 / math.sqrt(in_features)\n",
         "        import numpy as np\n        bound = 1 / math.sqrt(in_features)\n"),
        (WEIGHT_DRAW, "torch.tensor(np.random.uniform(-bound, bound, (out_features, in_features)), "
                      "dtype=torch.float32)"),
        (BIAS_DRAW, "torch.tensor(np.random.uniform(-bound, bound, out_features), dtype=torch.float32)"),
    ), says="torch.manual_seed"),
    Mistake("linear_weight_data_breaks_gradient", "Linear", edited(
        RIGHT_LINEAR, ("y = x @ self.weight.T", "y = x @ self.weight.data.T"),
    ), says="No gradient reached `weight`"),
]

LAYERNORM = [
    Mistake("layernorm_unbiased_variance", "LayerNorm", edited(
        RIGHT_LAYERNORM, ("var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)",
                          "var = x.var(dim=dims, keepdim=True)"),
    ), says="unbiased"),
    Mistake("layernorm_eps_outside_sqrt", "LayerNorm", edited(
        RIGHT_LAYERNORM, ("torch.sqrt(var + self.eps)", "(torch.sqrt(var) + self.eps)"),
    ), says="outside the square root"),
    Mistake("layernorm_fixed_eps", "LayerNorm", edited(
        RIGHT_LAYERNORM, ("var + self.eps", "var + 1e-5"),
    ), says="use self.eps"),
    Mistake("layernorm_over_batch_axis", "LayerNorm", edited(
        RIGHT_LAYERNORM, ("dims = tuple(range(-len(self.normalized_shape), 0))", "dims = 0"),
    ), says="normalised over dimension 0 instead"),
    Mistake("layernorm_last_dim_only", "LayerNorm", edited(
        RIGHT_LAYERNORM, ("dims = tuple(range(-len(self.normalized_shape), 0))", "dims = -1"),
    ), says="only the last one is normalised"),
    Mistake("layernorm_no_affine", "LayerNorm", edited(
        RIGHT_LAYERNORM, ("return x_hat * self.weight + self.bias", "return x_hat"),
    ), says="weight and bias are not applied"),
    Mistake("layernorm_plain_tensors", "LayerNorm", edited(
        RIGHT_LAYERNORM,
        ("nn.Parameter(torch.ones(self.normalized_shape))", "torch.ones(self.normalized_shape)"),
        ("nn.Parameter(torch.zeros(self.normalized_shape))", "torch.zeros(self.normalized_shape)"),
    ), says="plain tensor, not an nn.Parameter"),
    Mistake("layernorm_weight_starts_at_zero", "LayerNorm", edited(
        RIGHT_LAYERNORM, ("torch.ones(self.normalized_shape)", "torch.zeros(self.normalized_shape)"),
    ), says="weight all ones"),
    # Right values, but the gradient no longer flows through the mean and the variance.
    Mistake("layernorm_detached_statistics", "LayerNorm", edited(
        RIGHT_LAYERNORM,
        ("mean = x.mean(dim=dims, keepdim=True)\n", "mean = x.mean(dim=dims, keepdim=True).detach()\n"),
        ("** 2).mean(dim=dims, keepdim=True)\n", "** 2).mean(dim=dims, keepdim=True).detach()\n"),
    ), says="gradient must flow through them"),
]

MISTAKES = LINEAR + LAYERNORM + [
    # PyTorch's own classes give the right numbers, but they are the exercise done for you.
    Mistake("linear_is_torchs", "Linear", "Linear = nn.Linear\n",
            says="uses nn.Linear, which does the exercise for you"),
    Mistake("layernorm_subclasses_torchs", "LayerNorm",
            "class LayerNorm(nn.LayerNorm):\n    pass\n",
            says="uses nn.LayerNorm, which does the exercise for you"),
]
