"""Shared plumbing of the torch backends (VGGish, OpenL3, PaSST): torch import, device, threads, weights.

Nothing here imports torch at module import; :func:`import_torch` does, when an embedder is built.
Weights reach a backend in two steps: a bundle's published PyTorch checkpoint is converted once, when it is
fetched or imported, into a safetensors file (:func:`convert_checkpoint`, the only place that unpickles, and
only with ``torch.load(weights_only=True)``); loading an embedder then reads that file from the cache
(:func:`load_tensors`) and never touches the network or torch.hub.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tagstore.config import default_threads, parse_threads
from tagstore.errors import EmbedderError, MissingDependencyError

"""CPU threads for torch when an embedder's ``threads`` option is not given (shared with musicnn)."""

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


def import_torch(name: str) -> Any:
    """The torch module, or MissingDependencyError naming the extra that provides it."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"embedder {name!r} needs the package 'torch', which is not installed; run: pip install 'tagstore[torch]'"
        ) from exc
    return torch


def parse_bool(name: str, key: str, value: object) -> bool:
    """A boolean option given as a bool or a spec string (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise EmbedderError(f"{name}: option {key} must be true or false, got {value!r}")


def parse_positive(name: str, key: str, value: object, kind: type = float) -> Any:
    """A positive number option (``kind`` int or float) given as a number or a spec string."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise EmbedderError(f"{name}: option {key} must be a positive number, got {value!r}") from None
    if not number > 0:
        raise EmbedderError(f"{name}: option {key} must be a positive number, got {value!r}")
    return number


def resolve_threads(name: str, threads: int | str | None) -> int:
    """The one thread rule of every torch backend: the option, else :func:`tagstore.config.default_threads`
    (``$TAGSTORE_THREADS``, ``$OMP_NUM_THREADS``, the usable CPUs)."""
    if threads in (None, ""):
        return default_threads()
    return parse_threads(threads, name, EmbedderError)


def check_device(name: str, device: str) -> None:
    """Refuse a ``device`` option other than ``auto``, ``cpu`` or ``cuda`` (before any weights are read)."""
    if device not in ("auto", "cpu", "cuda"):
        raise EmbedderError(f"{name}: unknown device {device!r}; choose auto, cpu or cuda")


def setup_torch(name: str, device: str, threads: int | str | None) -> tuple[Any, Any]:
    """Import torch, apply the thread count and resolve ``device`` (``auto``, ``cpu`` or ``cuda``).

    Threads: :func:`resolve_threads`. Returns ``(torch, torch.device)``.
    """
    check_device(name, device)
    torch = import_torch(name)
    n = resolve_threads(name, threads)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    if device == "cuda" and not torch.cuda.is_available():
        raise EmbedderError(f"{name}: device 'cuda' asked for but torch sees no CUDA device; use device=cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return torch, torch.device("cuda" if use_cuda else "cpu")


CUDA_MEMORY_FRACTION = 0.5
"""Share of a CUDA device's free memory a backend's batches may fill (the rest: other work, fragmentation)."""
MAX_CUDA_BATCH = 1024
"""Most windows per forward pass on a GPU (beyond it a batch gains no speed, only latency)."""


def batch_size_for(torch: Any, device: Any, window_bytes: int, default: int, given: bool) -> int:
    """Windows per forward pass: ``default`` on CPU or when the user gave one (``given``); on CUDA, what
    :data:`CUDA_MEMORY_FRACTION` of the free device memory holds at ``window_bytes`` of working memory per
    window (a backend's estimate), between ``default`` and :data:`MAX_CUDA_BATCH`."""
    if given or device.type != "cuda":
        return default
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(default, min(MAX_CUDA_BATCH, int(free * CUDA_MEMORY_FRACTION) // max(1, window_bytes))))


class HostToDevice:
    """Moves float32 numpy batches to ``device``: on CUDA through one reused page-locked (pinned) host buffer
    and an asynchronous copy, so the transfer runs at full bus speed; on CPU it wraps the array (no copy)."""

    def __init__(self, torch: Any, device: Any) -> None:
        self.torch, self.device = torch, device
        self._pinned: Any = None

    def __call__(self, array: np.ndarray) -> Any:
        torch = self.torch
        if self.device.type != "cuda":
            return torch.from_numpy(array if array.flags.writeable else array.copy())
        flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        if self._pinned is None or self._pinned.numel() < flat.size:
            self._pinned = torch.empty(max(flat.size, 1 << 20), dtype=torch.float32).pin_memory()
        else:
            # The previous batch's asynchronous copy must be done before the buffer is overwritten.
            torch.cuda.current_stream(self.device).synchronize()
        staged = self._pinned[: flat.size]
        staged.numpy()[:] = flat
        return staged.view(array.shape).to(self.device, non_blocking=True)


def load_tensors(
    name: str, bundle_name: str, file_name: str, weights_dir: str | Path | None,
    shapes: Mapping[str, tuple[int, ...]] | Callable[[dict[str, np.ndarray]], Mapping[str, tuple[int, ...]]],
) -> tuple[dict[str, np.ndarray], str]:
    """Tensors of one converted weights file from the cache, checked against ``shapes``; and its digest.

    ``shapes`` may be a function of the loaded tensors (PaSST reads its depth from them).

    Raises MissingWeightsError (naming the fetch and import commands) when the bundle is not installed,
    WeightsDigestError when the file changed since it was installed, EmbedderError on missing or
    misshapen tensors.
    """
    from safetensors.numpy import load_file

    from tagstore.embedders import weights

    bundle = weights.BUNDLES[bundle_name]
    path, digest = weights.weights_file(bundle, file_name, Path(weights_dir) if weights_dir not in (None, "") else None)
    tensors = load_file(str(path))
    if callable(shapes):
        shapes = shapes(tensors)
    bad = [k for k, shape in shapes.items() if k not in tensors or tuple(tensors[k].shape) != tuple(shape)]
    if bad:
        raise EmbedderError(
            f"{name}: {path} lacks or misshapes {bad[:3]}; reinstall it with `{bundle.fetch_command()}`"
        )
    return tensors, digest


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Unpickle a PyTorch checkpoint with ``weights_only=True`` (tensors, numpy arrays, plain containers).

    numpy arrays are allowed because some published files (VGGish's PCA parameters) hold them; nothing
    else that could run code is. A checkpoint saved as a tuple or list (aisfx saves ``(state_dict,
    datasets)``) comes back as a dictionary keyed ``"0"``, ``"1"``, ... Raises EmbedderError when the file is
    not such a checkpoint.
    """
    torch = import_torch("weights")
    allowed: list[Any] = [np.ndarray, np.dtype] + [type(np.dtype(t)) for t in (np.float32, np.float64, np.int64)]
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy 2 pickles under numpy._core
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    # Files written with numpy 1 name numpy.core: allow both spellings.
    allowed += [_reconstruct, scalar, (_reconstruct, "numpy.core.multiarray._reconstruct"),
                (scalar, "numpy.core.multiarray.scalar")]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not a usable checkpoint
        raise EmbedderError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, (tuple, list)):
        obj = {str(i): item for i, item in enumerate(obj)}
    if not isinstance(obj, dict):
        raise EmbedderError(f"{path} holds a {type(obj).__name__}, not a dictionary of tensors")
    return obj


def to_numpy(value: Any) -> np.ndarray:
    """A tensor or array from a checkpoint as a float32 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value, dtype=np.float32))


def convert_checkpoint(
    source: Path, out_file: Path,
    shapes: Mapping[str, tuple[int, ...]] | Callable[[dict[str, Any]], Mapping[str, tuple[int, ...]]], what: str,
    adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = None, metadata: dict[str, str] | None = None,
) -> None:
    """Write the ``shapes`` tensors of checkpoint ``source`` (float32) to safetensors ``out_file``.

    ``adapt`` may unwrap, rename or reshape entries first; ``shapes`` may be a function of the (adapted)
    state. Extra entries are dropped; a missing or misshapen one raises EmbedderError naming ``what`` the
    file should have been.
    """
    from safetensors.numpy import save_file

    state = read_checkpoint(source)
    if adapt is not None:
        state = adapt(state)
    if callable(shapes):
        shapes = shapes(state)
    out, bad = {}, []
    for key, shape in shapes.items():
        if key not in state:
            bad.append(f"{key} missing")
            continue
        arr = to_numpy(state[key])
        if arr.shape != tuple(shape) and arr.squeeze().shape == tuple(d for d in shape if d != 1):
            arr = arr.reshape(shape)  # e.g. (128,) stored where (128, 1) is used
        if arr.shape != tuple(shape):
            bad.append(f"{key} is {arr.shape}, expected {tuple(shape)}")
            continue
        out[key] = arr
    if bad:
        raise EmbedderError(f"{source} is not {what}: {'; '.join(bad[:3])}")
    # One metadata key holding sorted JSON: safetensors writes metadata from a hash map whose order changes
    # from process to process, and the file's digest becomes the embedder's version, so it must be stable.
    meta = json.dumps({"source": source.name, **(metadata or {})}, sort_keys=True)
    save_file(out, str(out_file), metadata={"tagstore": meta})
