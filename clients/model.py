"""The digits classifier: a small torch MLP, its local training and evaluation.

The model standardises the 64 pixels of an 8×8 digit with fixed constants and maps
them to 10 logits through one hidden layer of 128 ReLU units:
logits = W₂ · relu(W₁ (x − m)/s + b₁) + b₂, W₁ ∈ ℝ^{128×64}, W₂ ∈ ℝ^{10×128}
(9,610 parameters). Everything here is deterministic given its seed, so two clients
that start from the same global model, hold the same data and use the same seed
produce bit-identical weights (single-threaded CPU torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

NUM_FEATURES = 64
HIDDEN_UNITS = 128
NUM_CLASSES = 10
# Mean and standard deviation of all pixels of the 1,797 digits scaled to [0, 1].
# Fixed constants, not learned and not sent: the state_dict holds the two layers only.
PIXEL_MEAN = 0.305
PIXEL_STD = 0.376


class DigitsMLP(nn.Module):
    """An MLP 64 → 128 → 10 on standardised pixels: f(x) = W₂ relu(W₁ x̃ + b₁) + b₂.

    x̃ = (x − 0.305)/0.376 centres the pixels, which in [0, 1] are mostly 0: with
    raw inputs, plain federated averaging at lr 0.1 needs several more rounds to
    pass 90 % test accuracy.
    """

    def __init__(self) -> None:
        """Create the two layers with torch's default initialisation."""
        super().__init__()
        self.hidden = nn.Linear(NUM_FEATURES, HIDDEN_UNITS)
        self.output = nn.Linear(HIDDEN_UNITS, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (batch, 10) of pixels x (batch, 64) in [0, 1]."""
        standardised = (x - PIXEL_MEAN) / PIXEL_STD
        return self.output(torch.relu(self.hidden(standardised)))


def build_model(seed: int) -> nn.Module:
    """Return a DigitsMLP with He-normal weights and zero biases drawn under `seed`.

    W ~ N(0, 2/fan_in) per entry (He, Zhang, Ren, Sun 2015), b = 0. The global torch
    generator is forked, so building a model leaves the caller's random state
    untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsMLP()
        for layer in (model.hidden, model.output):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> float:
    """Train `model` in place by plain mini-batch SGD and return its mean loss.

    Each epoch visits the examples in a fresh order drawn from a numpy generator
    seeded by `seed`; each step is w ← w − lr · ∇ (1/|B|) Σ_{i∈B} CE(f_w(x_i), y_i).
    The returned value is the example-weighted mean cross-entropy over every batch
    of every epoch, measured before each step.
    """
    if epochs < 0 or batch_size < 1 or len(x) == 0:
        raise ValueError(
            f"train: epochs = {epochs} (≥ 0), batch_size = {batch_size} (≥ 1) and "
            f"{len(x)} examples (≥ 1) expected"
        )
    rng = np.random.default_rng(seed)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    targets = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    parameters = list(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    loss_sum, seen = 0.0, 0
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for batch in torch.split(order, batch_size):
            loss = loss_fn(model(inputs[batch]), targets[batch])
            gradients = torch.autograd.grad(loss, parameters)
            sgd_step(parameters, gradients, lr)
            loss_sum += loss.item() * len(batch)
            seen += len(batch)
    return loss_sum / seen if seen else float("nan")


@torch.no_grad()
def sgd_step(
    parameters: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], lr: float
) -> None:
    """Apply w ← w − lr · g to every parameter in place.

    Written out rather than taken from torch.optim.SGD: constructing a torch
    optimizer imports torch._dynamo, about one CPU-second in every fresh
    ClientApp process.
    """
    for parameter, gradient in zip(parameters, gradients, strict=True):
        parameter.add_(gradient, alpha=-lr)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Return (mean cross-entropy, accuracy) of `model` on (x, y).

    loss = (1/N) Σ_i CE(f(x_i), y_i); accuracy = (1/N) #{i : argmax f(x_i) = y_i}.
    """
    if len(x) == 0:
        raise ValueError("evaluate: no examples")
    model.eval()
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    targets = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    logits = model(inputs)
    loss = nn.functional.cross_entropy(logits, targets).item()
    accuracy = (logits.argmax(dim=1) == targets).double().mean().item()
    return loss, accuracy


def state_to_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """Return a copy of the model's state_dict as numpy arrays, in its key order."""
    return {
        name: tensor.detach().cpu().numpy().copy()
        for name, tensor in model.state_dict().items()
    }


def arrays_to_state(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Return numpy arrays as a torch state_dict (copies; inputs may be read-only)."""
    return {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}


def flatten_state(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Concatenate the arrays, in key order, into one float64 vector."""
    return np.concatenate(
        [np.ravel(value).astype(np.float64) for value in arrays.values()]
    )


def unflatten_state(
    vector: np.ndarray, like: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Cut `vector` back into arrays with the keys, shapes and dtypes of `like`.

    The inverse of `flatten_state` on `like`; values are cast to each array's dtype.
    """
    sizes = [value.size for value in like.values()]
    if vector.shape != (sum(sizes),):
        raise ValueError(
            f"vector has shape {vector.shape}, expected ({sum(sizes)},) for the model"
        )
    pieces = np.split(vector, np.cumsum(sizes)[:-1])
    return {
        name: piece.reshape(value.shape).astype(value.dtype)
        for (name, value), piece in zip(like.items(), pieces, strict=True)
    }
