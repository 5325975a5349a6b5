"""The catalogue and the store handle: init/open errors, the writer lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tagstore import api
from tagstore import catalogue as cat
from tagstore.errors import (
    StoreBusyError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from tagstore.store import Store


def test_init_and_open_errors(tmp_path: Path, store: Store) -> None:
    with pytest.raises(StoreExistsError):
        Store.init(store.path)
    with pytest.raises(StoreNotFoundError, match="tagstore init"):
        Store.open(tmp_path / "nowhere")
    with cat.transaction(store.path) as con:
        cat.set_meta(con, "format_version", str(cat.FORMAT_VERSION + 1))
    with pytest.raises(StoreFormatError, match="upgrade tagstore"):
        Store.open(store.path)
    other = tmp_path / "other"
    other.mkdir()
    duckdb.connect(str(other / cat.CATALOGUE_FILE)).close()
    with pytest.raises(StoreFormatError, match="not a tagstore catalogue"):
        Store.open(other)


def test_second_writer_is_refused(store: Store, library: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from tagstore.catalogue import WriteLock; from pathlib import Path;"
         "l = WriteLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(30)",
         str(store.path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError, match=rf"pid {holder.pid}\) is writing"):
            api.add(store, [library])
    finally:
        holder.kill()
        holder.wait()
    assert len(api.add(store, [library]).added) == 12
