"""A dense layer on the sentence embedding (some sentence-transformers models add one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from biencoder.modules.errors import ModelFolderError

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
}


class Dense(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "") -> None:
        super().__init__()
        self.activation_name = activation or "torch.nn.modules.activation.Tanh"
        if self.activation_name not in _ACTIVATIONS:
            valid = ", ".join(_ACTIVATIONS)
            raise ValueError(f"unsupported Dense activation {self.activation_name!r}; supported: {valid}")
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = _ACTIVATIONS[self.activation_name]()

    @property
    def output_dimension(self) -> int:
        return self.linear.out_features

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        features["sentence_embedding"] = self.activation(self.linear(features["sentence_embedding"]))
        return features

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.linear.in_features,
            "out_features": self.linear.out_features,
            "bias": self.linear.bias is not None,
            "activation_function": self.activation_name,
        }

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config(), indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors"))

    @classmethod
    def load(cls, path: Path) -> Dense:
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ModelFolderError(f"Dense config unreadable: {path / 'config.json'} ({exc})") from None
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise ModelFolderError(f"Dense weights missing: {weights} (pytorch_model.bin is never unpickled)")
        module = cls(
            cfg["in_features"], cfg["out_features"], cfg.get("bias", True), cfg.get("activation_function", "")
        )
        module.load_state_dict(load_file(str(weights)))
        return module
