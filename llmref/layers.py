# GENERATED from solutions/05_modules/05_modules.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Linear and LayerNorm as torch.nn.Modules from raw tensors: the reference for exercise 05_modules."""
import math

import torch
from torch import nn


class Linear(nn.Module):
    """A fully connected layer, y = x @ weight.T + bias, like torch.nn.Linear.

    weight: (out_features, in_features); bias: (out_features,), or None when bias=False.
    Both start uniform in [-1/sqrt(in_features), 1/sqrt(in_features)].
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1 / math.sqrt(in_features)
        # nn.Parameter registers the tensor with the module: it is then in .parameters()
        # (what the optimiser updates), in the state dict, and converted by .double().
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        else:
            # Registered as None: `self.bias` exists, but is no parameter and not in the state dict.
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        # One row of weight per output unit, hence the transpose; @ broadcasts over the
        # leading dimensions of x.
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return y


class LayerNorm(nn.Module):
    """Layer normalisation over the trailing dimension(s), like torch.nn.LayerNorm.

    normalized_shape: an int or a tuple, the trailing shape each vector has.
    weight (ones) and bias (zeros) have that shape: a learned scale and shift.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., *normalized_shape) -> the same shape, normalised over the trailing dims."""
        dims = tuple(range(-len(self.normalized_shape), 0))
        mean = x.mean(dim=dims, keepdim=True)
        # The biased variance (divide by n), as torch.nn.LayerNorm uses, not torch.var's n - 1.
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return x_hat * self.weight + self.bias
