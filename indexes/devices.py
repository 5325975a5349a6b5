"""Where an index lives: choosing a device and moving indexes between CPU and GPU.

FAISS on CUDA needs a GPU build of faiss (the ``gpu`` extra); with ``faiss-cpu``,
``faiss.get_num_gpus()`` is 0 and every index stays on the CPU. Only Flat and IVF indexes have GPU
implementations; HNSW and the other graph/transform indexes run on the CPU. Saved files are always
written from a CPU copy, so a file does not depend on the device that built it.
"""

from __future__ import annotations

from typing import Any

from tagstore.errors import VectorIndexError

__all__ = ["DEVICES", "resolve_device", "search_compute", "gpu_supported", "to_gpu", "to_cpu"]

DEVICES = ("auto", "cpu", "cuda")


def faiss_module() -> Any:
    """``faiss``, imported on first use so that ``import tagstore.indexes`` stays cheap."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a required dependency
        raise VectorIndexError(f"FAISS cannot be imported ({exc}); install faiss-cpu or the `gpu` extra") from exc
    return faiss


def num_gpus() -> int:
    """GPUs visible to FAISS (0 for a ``faiss-cpu`` build)."""
    faiss = faiss_module()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when FAISS sees a GPU, else ``"cpu"``; ``"cuda"`` without one raises."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    if num_gpus() > 0:
        return "cuda"
    if device == "cuda":
        raise VectorIndexError(
            "device 'cuda' was asked for but FAISS sees no GPU (a faiss-cpu build or no CUDA device); "
            "use device 'cpu' or 'auto', or install the `gpu` extra on a machine with a CUDA GPU"
        )
    return "cpu"


def search_compute(device: str, factory: str) -> str:
    """Where an index of ``factory`` opened with ``device`` would search: ``"faiss-cuda"`` when FAISS sees a
    GPU, else ``"torch-cuda"`` for a Flat index when torch sees CUDA (:mod:`.torch_exact`), else ``"faiss-cpu"``.

    ``"cpu"`` always gives ``"faiss-cpu"``; ``"cuda"`` raises when neither GPU path applies.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "faiss-cpu"
    gpu_factory = factory == "Flat" or factory.startswith("IVF")
    if num_gpus() > 0 and gpu_factory:
        return "faiss-cuda"
    from .torch_exact import torch_cuda_available

    if factory == "Flat" and torch_cuda_available():
        return "torch-cuda"
    if device == "cuda":
        raise VectorIndexError(
            f"device 'cuda' was asked for but neither FAISS (no GPU build or no GPU) nor torch (no CUDA) can search "
            f"a {factory!r} index on a GPU; use device 'cpu' or 'auto', or install the `gpu` extra"
        )
    return "faiss-cpu"


def gpu_supported(index: Any) -> bool:
    """Whether the index inside an ``IndexIDMap2`` has a GPU implementation (Flat, IVF)."""
    faiss = faiss_module()
    inner = faiss.downcast_index(index.index)
    return isinstance(inner, (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexIVFPQ, faiss.IndexIVFScalarQuantizer))


def to_gpu(index: Any) -> tuple[Any, Any]:
    """A GPU copy of a CPU ``IndexIDMap2`` (the id map stays on the host) on all visible GPUs.

    Returns ``(gpu_index, resources)``; keep ``resources`` alive as long as the index.
    """
    faiss = faiss_module()
    try:
        if num_gpus() > 1:
            return faiss.index_cpu_to_all_gpus(index), None
        resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(resources, 0, index), resources
    except RuntimeError as exc:
        raise VectorIndexError(f"cannot move the index to the GPU: {first_line(exc)}; use device 'cpu'") from exc


def to_cpu(index: Any) -> Any:
    """A CPU copy of a GPU-backed index, for saving and for what GPU indexes cannot do."""
    return faiss_module().index_gpu_to_cpu(index)


def first_line(exc: BaseException) -> str:
    """The first line of a FAISS error, without its C++ signature noise where possible."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # FAISS messages read "Error in <signature> at <file>:<line>: <message>"; keep the message.
    marker = text.rfind(": ")
    return text[marker + 2 :] if text.startswith("Error in") and marker > 0 else text
