"""The one error hierarchy of tagstore.

Every error a user can cause is a :class:`TagstoreError`; its message is one line that names the value
that failed and the fix. The CLI turns these into ``error: <message>`` and exit status 1 in one place
(``tagstore.cli.main``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TagstoreError(Exception):
    """Base class: a user-facing failure with a one-line message naming the value and the fix."""

    exit_code = 1


# --- store --------------------------------------------------------------------------------------


class StoreError(TagstoreError):
    """A problem with the store folder or its catalogue."""


class StoreNotFoundError(StoreError):
    """No store at the given path."""


class StoreExistsError(StoreError):
    """`init` on a folder that already holds a store."""


class StoreFormatError(StoreError):
    """The store was written by a newer tagstore, or is not a tagstore catalogue at all."""


class StoreBusyError(StoreError):
    """Another process is writing the store."""


class StoreCorruptError(StoreError):
    """The catalogue file is damaged (DuckDB cannot read it); restore it from a backup."""


class StoreDamagedError(StoreError):
    """A catalogue value or table that is not what tagstore wrote (edited by hand, or a bug)."""


class StorageError(StoreError):
    """A file of the store cannot be written: disk full, file size limit, read-only, permissions."""


class EmptyStoreError(StoreError):
    """The store holds no tracks yet."""


class LayoutMismatchError(StoreError):
    """A vector of another embedder layout would be mixed into the store."""


# --- input --------------------------------------------------------------------------------------


class InputError(TagstoreError):
    """A path or value given by the user is unusable."""


class PathNotFoundError(InputError):
    """A path given by the user does not exist."""


class TrackNotFoundError(InputError):
    """A catalogue id or path that is not in the store."""


class AudioError(InputError):
    """An audio file that cannot be used."""


class NotAudioError(AudioError):
    """A file that no decoder can read as audio."""


class EmptyAudioError(AudioError):
    """A file with no samples."""


class SilentAudioError(AudioError):
    """A file whose samples are all (near) zero."""


class NonFiniteAudioError(AudioError):
    """A file whose samples hold NaN or infinity, or values far beyond full scale."""


class TooShortAudioError(AudioError):
    """A file shorter than the minimum an embedder can describe."""


# --- embedders and models -----------------------------------------------------------------------


class EmbedderError(TagstoreError):
    """An embedder cannot be built or run."""


class UnknownEmbedderError(EmbedderError):
    """An embedder name that is not registered."""


class MissingDependencyError(EmbedderError):
    """An optional package an embedder needs is not installed."""


class MissingWeightsError(EmbedderError):
    """Model weights are not in the cache; the message names the command that fetches them."""

    def __init__(self, message: str, bundle: str | None = None) -> None:
        super().__init__(message)
        self.bundle = bundle
        """Name of the weights bundle that is missing (``tagstore models fetch BUNDLE``), when known."""


class WeightsDigestError(EmbedderError):
    """A weights file whose digest differs from the one recorded for it."""


# --- index --------------------------------------------------------------------------------------


class VectorIndexError(TagstoreError):
    """The vector index cannot be built, read or searched."""


class IndexCorruptError(VectorIndexError):
    """An index file that does not match what the catalogue recorded for it."""


# --- tags ---------------------------------------------------------------------------------------


class TagError(TagstoreError):
    """A tag operation that cannot be done as asked."""


class UnknownTagError(TagError):
    """A tag name that is not in the store."""
