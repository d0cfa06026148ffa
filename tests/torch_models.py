"""A small PyTorch digits classifier for the torch-backend tests: a CNN with BatchNorm and Dropout (the
layers a frozen classifier must not let move or fire), channels-first as PyTorch users write them.

Imported only by processes on the torch backend (TensorFlow and torch must not share a process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_SHAPE = (1, 8, 8)
N_CLASSES = 10


class DigitsCNN(nn.Module):
    def __init__(self, logits: bool = False) -> None:
        super().__init__()
        self.logits = logits
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(x))
        return z if self.logits else torch.softmax(z, dim=-1)


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits in [0, 1], shape (n, 1, 8, 8) float32, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    return x, digits.target.astype(np.int64)


def trained_digits_cnn(x: np.ndarray, y: np.ndarray, logits: bool = False, epochs: int = 8, seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    model = DigitsCNN(logits=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.logits = logits
    return model.eval()


def export(model: nn.Module, path: Path, train_mode: bool = False) -> Path:
    """torch.export with a dynamic batch dimension (1 and up), as a served classifier is exported."""
    model.train(train_mode)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (torch.zeros(2, *INPUT_SHAPE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    model.eval()
    return path
