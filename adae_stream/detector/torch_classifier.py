"""PyTorch classifiers for the detector, on the torch backend: loading them safely and keeping them frozen.

Why not ``keras.layers.TorchModuleWrapper``: inside a Keras fit it leaves the module in train mode and
moves its BatchNorm statistics, and its saving pickles the module, which safe_mode refuses
(shared/reference/keras-backends.md). The module is called directly instead, in eval mode, with no
gradient to its parameters, and checked at load: a classifier whose buffers move or whose answers
change between identical calls is refused, since its scores would not be a function of the input.

What loading trusts (README, "PyTorch classifiers"):
- ``.pt2`` (``torch.export.save``): a graph of ATen operators and raw weights, no Python code. Its
  loader unpickles some parts (sample inputs, pickled constants) with ``weights_only=False`` as a
  fallback; every such part is first loaded here with ``weights_only=True`` and the file refused if one
  needs more, so a ``.pt2`` runs no code of its author's.
- TorchScript (``torch.jit.save``): runs its own TorchScript code, as a Keras ``Lambda`` layer would;
  refused unless the user opts in (``--allow-torchscript``, ``detector.allow_torchscript``), as Keras'
  safe_mode refuses lambdas.
- A pickled module (``torch.save(model)``): arbitrary Python at load; always refused.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adae_stream.errors import DetectorLoadError

OUTPUTS = ("probabilities", "logits")
PT2, TORCHSCRIPT = "pt2", "torchscript"
PROBE_BATCH = 8  # random instances the freeze check calls the classifier on


def device() -> torch.device:
    from adae_stream.detector.engines.torch_engine import device as keras_device

    return keras_device()


class TorchClassifier:
    """A frozen PyTorch classifier as the detector sees a Keras one: ``model(x, training=False)`` gives
    class probabilities (softmax applied here when the module returns logits)."""

    def __init__(
        self,
        module: torch.nn.Module,
        input_shape: tuple[int, ...],
        outputs: str = "probabilities",
        program: torch.export.ExportedProgram | None = None,
    ) -> None:
        """``module`` as loaded; ``program`` the ExportedProgram it came from (saved as it is), if any."""
        import keras

        if keras.backend.backend() != "torch":
            raise ValueError(
                f"a PyTorch classifier needs the torch backend (KERAS_BACKEND=torch), not {keras.backend.backend()!r}"
            )
        if outputs not in OUTPUTS:
            raise ValueError(f"outputs must be one of {', '.join(OUTPUTS)}, got {outputs!r}")
        self.module = module.to(device())
        try:
            self.module.eval()
        except (NotImplementedError, RuntimeError):  # an ExportedProgram's mode was fixed when it was exported
            pass
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.outputs = outputs
        self.program = program
        self.name = "torch_classifier"
        self.trainable = False
        self.n_classes = self._check_frozen()

    def __call__(self, x: Any, training: bool = False) -> Any:
        out = self.module(x)
        return torch.softmax(out, dim=-1) if self.outputs == "logits" else out

    @property
    def weights(self) -> list[np.ndarray]:
        """Parameters and buffers in the module's own order (detector/identity.py hashes them)."""
        return [t.detach().cpu().numpy() for t in self.module.state_dict().values()]

    def _check_frozen(self) -> int:
        """Call it on a probe batch: refuse a module that is not a pure function of each instance."""
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((PROBE_BATCH, *self.input_shape), generator=gen).to(device())
        before = [b.detach().clone() for b in self.module.buffers()]
        with torch.no_grad():
            try:
                first, second, alone = self(x), self(x), self(x[:1])
            except Exception as exc:  # a wrong input shape or dtype, a module that needs more arguments
                raise ValueError(
                    f"the classifier cannot be called on a batch of shape {tuple(x.shape)}: {exc}"
                ) from exc
        moved = any(not torch.equal(a, b) for a, b in zip(before, self.module.buffers(), strict=True))
        if moved or not torch.allclose(first, second) or not torch.allclose(first[:1], alone, atol=1e-5):
            raise ValueError(
                "the classifier is not frozen: its buffers moved or its answers changed between identical calls "
                "(BatchNorm or Dropout in train mode); call model.eval() before torch.export / torch.jit.script"
            )
        if first.ndim != 2 or first.shape[1] < 2:
            raise ValueError(f"the classifier must return (batch, classes) scores, got shape {tuple(first.shape)}")
        probs = first if self.outputs == "probabilities" else torch.softmax(first, dim=-1)
        if self.outputs == "probabilities" and (
            bool((probs < 0).any())
            or not torch.allclose(probs.sum(-1), torch.ones(len(probs), device=probs.device), atol=1e-4)
        ):
            raise ValueError("the classifier's outputs are not probabilities: declare them as logits (--logits)")
        return int(first.shape[1])

    def save(self, directory: Path) -> str:
        """Saved in the format it came in (a .pt2 keeps loading without opt-in); returns the file name."""
        if self.program is not None:
            torch.export.save(self.program, directory / "model.pt2")
            return "model.pt2"
        if isinstance(self.module, torch.jit.ScriptModule):
            torch.jit.save(self.module, directory / "model.ts")
            return "model.ts"
        raise ValueError("only a classifier loaded from .pt2 (torch.export) or TorchScript can be saved")


def file_format(path: Path) -> str:
    """pt2 or torchscript, from the archive's contents (names lie; both are zip files)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise DetectorLoadError(f"{path} is not a PyTorch archive (.pt2 or TorchScript): {exc}") from exc
    if any(n.endswith("/archive_format") for n in names):
        return PT2
    if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
        return TORCHSCRIPT
    if any(n.endswith("/data.pkl") for n in names):
        raise DetectorLoadError(
            f"{path} is a pickled Python object (torch.save): loading it runs arbitrary code, so it is refused. "
            "Save the classifier with torch.export.save (.pt2) or torch.jit.save (TorchScript)."
        )
    raise DetectorLoadError(f"{path} is neither a torch.export .pt2 archive nor a TorchScript archive")


def _check_pickled_parts(path: Path) -> None:
    """Every part torch.export.load could unpickle must load with weights_only=True (tensors, plain
    containers), because torch.export.load falls back to weights_only=False, which runs code."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickled = [n for n in names if n.endswith((".pt", ".pkl"))]
        for config_name in (n for n in names if n.endswith("_config.json") and "/data/" in n):
            folder = os.path.dirname(config_name)
            entries = json.loads(archive.read(config_name)).get("config", {})
            pickled += [f"{folder}/{e['path_name']}" for e in entries.values() if e.get("use_pickle")]
        for name in pickled:
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception as exc:
                raise DetectorLoadError(
                    f"{path}: part {name} needs code to unpickle ({type(exc).__name__}), which a .pt2 must not; "
                    "refused (re-export the classifier with torch.export.save from a trusted environment)"
                ) from exc


def load_torch_classifier(
    path: str | os.PathLike,
    input_shape: tuple[int, ...] | None = None,
    outputs: str = "probabilities",
    allow_torchscript: bool = False,
) -> TorchClassifier:
    """Load a frozen classifier from .pt2 (safe) or TorchScript (with allow_torchscript)."""
    path = Path(path)
    fmt = file_format(path)
    try:
        if fmt == PT2:
            _check_pickled_parts(path)
            program = torch.export.load(path)
            module: Any = program.module()
            if input_shape is None:
                example = program.example_inputs[0][0] if program.example_inputs else None
                if example is None:
                    raise ValueError("the .pt2 holds no example inputs: give the input shape")
                input_shape = tuple(example.shape[1:])
        else:
            if not allow_torchscript:
                raise DetectorLoadError(
                    f"{path} is TorchScript, which runs its own code when called; refused unless you opt in "
                    "(--allow-torchscript, or detector.allow_torchscript: true). A .pt2 (torch.export) needs no opt-in."
                )
            if input_shape is None:
                raise ValueError("a TorchScript classifier needs its input shape (--input-shape)")
            module = torch.jit.load(path, map_location=device())
        return TorchClassifier(module, input_shape, outputs, program if fmt == PT2 else None)
    except DetectorLoadError:
        raise
    except Exception as exc:
        raise DetectorLoadError(f"cannot load the PyTorch classifier {path}: {type(exc).__name__}: {exc}") from exc
