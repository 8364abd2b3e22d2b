# GENERATED from solutions/07_training/07_training.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""The spiral task, its small MLP, and a training loop with its evaluation: the reference for exercise 07_training."""
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def make_spirals(n_per_class: int, *, noise: float = 0.05, turns: float = 1.5, seed: int = 0):
    """Two interleaved spirals in the plane, one per class.

    Returns X, (2 * n_per_class, 2) float32, and y, (2 * n_per_class,) int64 labels 0 and 1.
    Class 1 is class 0 turned by half a revolution. `seed` fixes the points without
    touching torch's global random state.
    """
    generator = torch.Generator().manual_seed(seed)
    # sqrt: the arm gets longer per unit of t as it winds outwards; this spreads the points
    # evenly along it instead of crowding them at the centre.
    t = torch.rand(2, n_per_class, generator=generator).sqrt()
    angle = 2 * math.pi * turns * t + torch.tensor([[0.0], [math.pi]])
    X = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=-1).reshape(-1, 2)
    X = X + noise * torch.randn(X.shape, generator=generator)
    y = torch.arange(2).repeat_interleave(n_per_class)
    return X, y


def make_model(seed: int = 0, hidden: int = 64, dropout: float = 0.1) -> nn.Sequential:
    """An MLP from 2-D points to 2 logits, with dropout. Seeds torch's global generator with
    `seed`, so the same seed gives the same initial weights."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 2),
    )


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
          progress: bool = False) -> list[float]:
    """Fit `model` to (X, y): `steps` full-batch Adam steps on the mean cross-entropy.

    Returns the loss of every step (before its update) as a list of Python floats.
    progress=True shows a tqdm progress bar.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()  # dropout on: the model may arrive in eval mode from evaluate()
    losses = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for _ in bar:
        optimizer.zero_grad()  # backward() adds to .grad: clear the previous step's
        loss = F.cross_entropy(model(X), y)  # the mean over all points, from the logits
        loss.backward()  # d loss / d parameter, added into each parameter's .grad
        optimizer.step()  # Adam's update, from .grad
        losses.append(loss.item())  # a float: a tensor would keep this step's graph alive
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    return losses


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of the points in X whose largest logit is at their class in y.

    Runs the model in eval mode (dropout off) without recording a graph; returns a float.
    """
    model.eval()  # dropout off: every unit takes part, predictions are deterministic
    with torch.no_grad():  # nothing will be backpropagated: build no graph
        predictions = model(X).argmax(dim=-1)
    return (predictions == y).float().mean().item()
