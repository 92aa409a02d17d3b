"""The slice classifier: a timm network made by name, one logit out."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import timm
import torch

from hepred.errors import HepredError
from hepred.training import load_weights

logger = logging.getLogger(__name__)


def build_model(cfg: dict, log: logging.Logger = logger) -> torch.nn.Module:
    """``cfg["model"]`` from timm's registry, 3 input channels, 1 output logit.

    Random initialisation unless ``cfg["pretrained"]`` names a local weights file; nothing is
    ever downloaded.
    """
    try:
        model = timm.create_model(cfg["model"], pretrained=False, in_chans=3, num_classes=1)
    except RuntimeError as exc:  # timm's "Unknown model" error
        raise HepredError(f"classifier.model: {exc}") from None
    if cfg.get("pretrained"):
        load_pretrained(model, Path(cfg["pretrained"]), log)
    return model


def load_pretrained(model: torch.nn.Module, path: Path, log: logging.Logger = logger) -> None:
    """Copy matching tensors from a local state dict (plain, or hepred's ``{"state_dict": ...}``).

    Tensors whose shape differs (an ImageNet head of 1000 classes) are skipped and reported.
    """
    if not path.is_file():
        raise HepredError("pretrained weights file not found", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise HepredError(f"cannot load weights (weights_only): {str(exc).splitlines()[0]}", path=path) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise HepredError("no tensor in the file matches the classifier's layers", path=path)
    skipped = sorted(set(own) - set(usable))
    model.load_state_dict(usable, strict=False)
    log.info(
        "pretrained weights %s: %d tensors loaded, %d left at random init %s",
        path,
        len(usable),
        len(skipped),
        skipped[:5],
    )


def load_classifier(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A trained ``model.pt`` (hepred.training.save_weights format) ready for inference, and its meta."""
    try:
        payload = load_weights(path, map_location="cpu")
    except FileNotFoundError:
        raise HepredError("model file not found", path=path) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise HepredError(f"cannot load model: {str(exc).splitlines()[0]}", path=path) from None
    meta = payload.get("meta") or {}
    if "classifier" not in meta:
        raise HepredError("model file has no classifier settings in its meta", path=path)
    model = build_model({**meta["classifier"], "pretrained": ""})
    model.load_state_dict(payload["state_dict"])
    model.to(device, memory_format=torch.channels_last).eval()
    return model, meta
