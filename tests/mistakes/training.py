"""Wrong versions of train and evaluate (exercise 07_training)."""
from . import Mistake

EXERCISE = "07_training"

TRAIN_HEAD = "def train(model, X, y, steps, lr, progress=False):\n"
EVALUATE_HEAD = "def evaluate(model, X, y):\n"


def _train(step: str, *, before: str = "    optimizer = torch.optim.Adam(model.parameters(), lr=lr)\n"
                                        "    model.train()\n",
           record: str = "losses.append(loss.item())") -> str:
    body = "".join(f"        {line}\n" for line in step.strip().splitlines())
    return (TRAIN_HEAD + before + "    losses = []\n"
            "    for _ in tqdm(range(steps), disable=not progress):\n" + body
            + f"        {record}\n    return losses\n")


RIGHT_STEP = """
optimizer.zero_grad()
loss = F.cross_entropy(model(X), y)
loss.backward()
optimizer.step()
"""

TRAIN = [
    Mistake("train_forgets_zero_grad", "train", _train("""
loss = F.cross_entropy(model(X), y)
loss.backward()
optimizer.step()
"""), says="ADDS to .grad"),
    Mistake("train_forgets_step", "train", _train("""
optimizer.zero_grad()
loss = F.cross_entropy(model(X), y)
loss.backward()
"""), says="call optimizer.step()"),
    Mistake("train_forgets_backward", "train", _train("""
optimizer.zero_grad()
loss = F.cross_entropy(model(X), y)
optimizer.step()
"""), says="call loss.backward()"),
    Mistake("train_zero_grad_between_backward_and_step", "train", _train("""
loss = F.cross_entropy(model(X), y)
loss.backward()
optimizer.zero_grad()
optimizer.step()
"""), says="before the next zero_grad()"),
    Mistake("train_returns_loss_tensors", "train", _train(RIGHT_STEP, record="losses.append(loss)"),
            says="append loss.item()"),
    Mistake("train_forgets_train_mode", "train", _train(
        RIGHT_STEP, before="    optimizer = torch.optim.Adam(model.parameters(), lr=lr)\n"),
        says="call model.train()"),
    Mistake("train_new_optimizer_every_step", "train", _train(
        "optimizer = torch.optim.Adam(model.parameters(), lr=lr)\n" + RIGHT_STEP,
        before="    model.train()\n"), says="create it once, before the loop"),
    Mistake("train_ignores_lr", "train", _train(
        RIGHT_STEP, before="    optimizer = torch.optim.Adam(model.parameters())\n    model.train()\n"),
        says="does not use the `lr` argument"),
    Mistake("train_sum_of_losses", "train", _train("""
optimizer.zero_grad()
loss = F.cross_entropy(model(X), y, reduction="sum")
loss.backward()
optimizer.step()
"""), says="SUM of the points' cross-entropies"),
    Mistake("train_unseeded_numpy_minibatches", "train", _train("""
import numpy as np
batch = torch.from_numpy(np.random.permutation(len(X))[:200])
optimizer.zero_grad()
loss = F.cross_entropy(model(X[batch]), y[batch])
loss.backward()
optimizer.step()
"""), says="Training must be reproducible"),
]


def _evaluate(body: str) -> str:
    return EVALUATE_HEAD + "".join(f"    {line}\n" for line in body.strip().splitlines())


EVALUATE = [
    Mistake("evaluate_forgets_eval_mode", "evaluate", _evaluate("""
with torch.no_grad():
    predictions = model(X).argmax(dim=-1)
return (predictions == y).float().mean().item()
"""), says="call model.eval()"),
    Mistake("evaluate_records_gradients", "evaluate", _evaluate("""
model.eval()
predictions = model(X).argmax(dim=-1)
return (predictions == y).float().mean().item()
"""), says="torch.no_grad()"),
    Mistake("evaluate_returns_tensor", "evaluate", _evaluate("""
model.eval()
with torch.no_grad():
    predictions = model(X).argmax(dim=-1)
return (predictions == y).float().mean()
"""), says="return a Python float"),
    Mistake("evaluate_returns_percentage", "evaluate", _evaluate("""
model.eval()
with torch.no_grad():
    predictions = model(X).argmax(dim=-1)
return 100 * (predictions == y).float().mean().item()
"""), says="a percentage"),
    Mistake("evaluate_returns_count", "evaluate", _evaluate("""
model.eval()
with torch.no_grad():
    predictions = model(X).argmax(dim=-1)
return (predictions == y).sum().item()
"""), says="the NUMBER of points"),
    Mistake("evaluate_trains_on_the_test_set", "evaluate", _evaluate("""
model.eval()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
optimizer.zero_grad()
logits = model(X)
F.cross_entropy(logits, y).backward()
optimizer.step()
return (logits.argmax(dim=-1) == y).float().mean().item()
"""), says="changed the model's parameters"),
    Mistake("evaluate_argmax_over_points", "evaluate", _evaluate("""
model.eval()
with torch.no_grad():
    logits = model(X)
return (logits.argmax(dim=0) == y[:2]).float().mean().item()
"""), says="largest logit"),
]

MISTAKES = TRAIN + EVALUATE
