"""Shared pieces of every training loop: device choice, seeding, resumable checkpoints."""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import platform
import random
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepred.io import atomic_path, write_json

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """'auto' takes the GPU when one is visible, else the CPU; 'cpu'/'cuda' force one."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    """Seed every generator we use and ask torch for deterministic kernels on the CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def autocast(device: torch.device):
    """Mixed precision on the GPU (bf16: no loss scaling needed); full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpoint:
    """``checkpoint_latest``: written atomically after every epoch, outside the declared output.

    A job killed at any moment (SIGKILL, SIGTERM, SLURM preemption) leaves either the
    previous complete checkpoint or the new one, never a torn file, so a rerun resumes
    from the last finished epoch.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        # Our own file with RNG states and optimizer state inside: not weights-only.
        return torch.load(self.path, map_location=map_location, weights_only=False)

    def resume(self, fingerprint: str, log: logging.Logger) -> dict[str, Any] | None:
        """The saved state when it was written by this run (same ``fingerprint``: settings,
        cases, seed), else None: a checkpoint of another setup or one that cannot be read is
        not resumed from, with a warning, and training starts over."""
        try:
            state = self.load()
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:  # not a torch file, or a truncated one
            log.warning("%s cannot be read (%s); starting over", self.path, type(exc).__name__)
            return None
        if state is not None and state.get("fingerprint") != fingerprint:
            log.warning("%s was written by a different setup (config, cases or seed); starting over", self.path)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def save_weights(path: str | Path, state_dict: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Final weights as plain tensors (plus JSON-like metadata) so ``weights_only=True`` loads them."""
    payload = {"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    if extra:
        payload["meta"] = extra
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


TRAINED_WITH = "trained_with.json"
RECORDED_PACKAGES = ("hepred", "torch", "timm", "monai", "numpy")


def run_environment(device: torch.device, **speed: Any) -> dict[str, Any]:
    """What a result depends on beyond its settings: on the CPU, the thread count changes
    the floating-point sums (1 thread gives byte-identical reruns, 2 threads may not), and the
    device and package versions do too, and so does the instruction set torch's CPU kernels
    dispatch to (``cpu_capability``: with the same code the demo's diffusion-fed t5 row read 0.707
    on an earlier host of our VM and 0.724 on an AVX512 one, where reruns on one host are
    byte-identical). ``speed`` adds the job's other speed settings."""
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:
            versions[name] = None
    cpu_name = processor_name()
    return {
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name,
        # On a GPU too: data loading, augmentation and the CPU-side sums run there.
        "cpu_name": cpu_name,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "packages": versions,
        **speed,
    }


def processor_name() -> str | None:
    """The CPU's model name: /proc/cpuinfo on Linux, where ``platform.processor()`` is empty."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def write_trained_with(model_path: Path, settings: dict[str, Any], environment: dict[str, Any]) -> None:
    """``trained_with.json`` beside a model: the settings it was trained with and the
    environment (threads, device, versions) that its exact numbers depend on."""
    write_json(Path(model_path).with_name(TRAINED_WITH), {"settings": settings, "environment": environment})
