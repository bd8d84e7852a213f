"""Model weights on disk: safetensors, the format the field's hubs and loaders use; legacy torch saves read.

A ``.safetensors`` file holds a JSON header and raw tensor bytes, nothing executable, so a folder
from elsewhere can be opened without trusting it (a pickle-based ``torch.save`` file can carry
code; torch's ``weights_only`` loader guards against that, safetensors has nothing to guard).

safetensors refuses tensors that share memory. The decoder ties its output heads to its token
embeddings (``GPT`` sets ``head.weight = embedding.weight``), so the state dict names one tensor
twice: :func:`write_weights` stores it once, under its first name, and records the other names
in the file's metadata (``tied``: alias -> stored name); :func:`read_weights` gives every name
back, so ``load_state_dict`` sees the state dict the model wrote.
"""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save

from shortcutlm.artifacts.files import ArtifactError, write_with

SAFETENSORS_SUFFIX = ".safetensors"
#: Metadata keys of the files this module writes.
TIED_KEY = "tied"
FORMAT_KEY = "format"

# What torch.load raises on a file that is not a torch save of tensors: garbage or truncated
# bytes (zip errors are RuntimeError, a stray pickle gives KeyError or UnpicklingError), an empty
# file (EOFError), an unreadable one (OSError), pickled objects other than tensors (UnpicklingError).
TORCH_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError,
                     AttributeError, ImportError, IndexError, MemoryError, struct.error)
#: What reading a weights file of either format may raise on bad bytes.
WEIGHTS_LOAD_ERRORS = (SafetensorError, *TORCH_LOAD_ERRORS)


class WeightsError(ArtifactError, ValueError):
    """A weights file that does not hold a state dict of tensors (the message names the file)."""


def untied_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors to store, alias -> stored name)``: a tensor that several names share (tied
    weights) is kept once, under the first name in ``state``'s order. Sharing is decided on the
    tensors given (before any copy to the CPU, which would part them)."""
    stored: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen.setdefault(key, name)
        stored[name] = tensor.detach().to("cpu").contiguous()
    return stored, tied


def write_weights(path: str | Path, state: Mapping[str, torch.Tensor], durable: bool = True) -> Path:
    """Write a state dict as safetensors (atomically; ``durable``: fsynced, as a resumed run trusts it)."""
    stored, tied = untied_state(state)
    metadata = {FORMAT_KEY: "pt", TIED_KEY: json.dumps(tied, sort_keys=True)}
    body = safetensors_save(stored, metadata=metadata)
    return write_with(path, lambda fh: fh.write(body), durable=durable)


def _tied_names(path: Path, metadata: dict[str, str] | None) -> dict[str, str]:
    """The ``tied`` metadata of a safetensors file (``{}`` for one written elsewhere without it)."""
    text = (metadata or {}).get(TIED_KEY)
    if not text:
        return {}
    try:
        tied = json.loads(text)
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path}: its {TIED_KEY!r} metadata is not JSON") from err
    if not isinstance(tied, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise WeightsError(f"{path}: its {TIED_KEY!r} metadata is not a mapping of tensor names")
    return tied


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` on the CPU: a ``.safetensors`` file (tied names restored), else a
    legacy ``torch.save`` file, loaded with ``weights_only=True`` (tensors and plain containers only).

    Raises what the format's reader raises on bad bytes (:data:`WEIGHTS_LOAD_ERRORS`); the caller
    words it for its folder.
    """
    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path}: not a state dict of tensors")
        return state
    with safe_open(path, framework="pt", device="cpu") as fh:
        tied = _tied_names(path, fh.metadata())
        state = {name: fh.get_tensor(name) for name in fh.keys()}
    for alias, name in tied.items():
        if name not in state:
            raise WeightsError(f"{path}: {alias} is tied to {name}, which the file does not hold")
        state[alias] = state[name]
    return state
