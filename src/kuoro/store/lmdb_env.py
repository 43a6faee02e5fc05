"""The LMDB environment under a suggestion store: opening it safely, writing with a growing
map, reading with views, and handing the mapped pages of its file back to the kernel."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lmdb

from kuoro.store.codec import META_KEY, StoreError

# LMDB's meta pages (pages 0 and 1): after a 16-byte page header, the magic number, the
# page size (the free-page database's md_pad), the last page used and the transaction id.
_LMDB_MAGIC = 0xBEEFC0DE
_LMDB_MAGIC_AT, _LMDB_PAGE_SIZE_AT, _LMDB_LAST_PAGE_AT = 16, 40, 136


def check_data_file(data_file: Path) -> None:
    """Refuse an LMDB data file that is shorter than its own meta pages say (truncated, e.g.
    by a full disk or a bad copy): mapping it would kill the process with SIGBUS at the first
    read past its end."""
    try:
        size = data_file.stat().st_size
        with data_file.open("rb") as f:
            head = f.read(2 * 65536)
    except OSError as exc:
        raise StoreError(f"cannot read the suggestion store file {data_file}: {exc}") from exc
    rebuild = "rebuild it: run the training again with --no-cached"
    if len(head) < _LMDB_LAST_PAGE_AT + 16:
        raise StoreError(f"the suggestion store file {data_file} is truncated; {rebuild}")
    (magic,) = struct.unpack_from("<I", head, _LMDB_MAGIC_AT)
    (page_size,) = struct.unpack_from("<I", head, _LMDB_PAGE_SIZE_AT)
    if magic != _LMDB_MAGIC or page_size < 512 or page_size & (page_size - 1):
        raise StoreError(f"{data_file} is not an intact suggestion store file; {rebuild}")
    metas = [0, page_size] if len(head) >= page_size + _LMDB_LAST_PAGE_AT + 16 else [0]
    last_pages = []
    for offset in metas:
        (meta_magic,) = struct.unpack_from("<I", head, offset + _LMDB_MAGIC_AT)
        last_page, txn_id = struct.unpack_from("<QQ", head, offset + _LMDB_LAST_PAGE_AT)
        if meta_magic == _LMDB_MAGIC:
            last_pages.append((txn_id, last_page))
    # The meta page of the latest transaction says how far the file must reach.
    needed = (max(last_pages)[1] + 1) * page_size
    if size < needed:
        raise StoreError(
            f"the suggestion store file {data_file} is truncated ({size} bytes of {needed}); "
            f"{rebuild}"
        )


def open_env(path: Path, *, readonly: bool, map_size: int) -> lmdb.Environment:
    """The environment at ``path`` (created unless ``readonly``), its data file checked first."""
    data_file = path / "data.mdb"
    if data_file.exists():
        check_data_file(data_file)
    # LMDB maps at least the size recorded by the last writer; the file size covers the rest.
    size = max(map_size, data_file.stat().st_size if data_file.exists() else 0)
    if not readonly:
        path.mkdir(parents=True, exist_ok=True)
    try:
        return lmdb.open(
            os.fspath(path), map_size=size, readonly=readonly, max_dbs=0, meminit=False
        )
    except lmdb.Error as exc:
        raise StoreError(f"cannot open the suggestion store at {path}: {exc}") from exc


def put_growing(
    env: lmdb.Environment, items: Mapping[bytes, bytes], *, expected_meta: bytes | None = None
) -> None:
    """Write ``items`` in one transaction, doubling the map until they fit. With
    ``expected_meta``, refuse to write unless the stored meta record is still that one."""
    while True:
        try:
            with env.begin(write=True) as txn:
                if expected_meta is not None and txn.get(META_KEY) != expected_meta:
                    raise StoreError(
                        f"the store at {env.path()} was written by another writer meanwhile"
                    )
                for key, value in items.items():
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            # The failed transaction is aborted; nothing of it was written.
            env.set_mapsize(env.info()["map_size"] * 2)
        except lmdb.Error as exc:  # e.g. the disk is full
            raise StoreError(f"cannot write the suggestion store at {env.path()}: {exc}") from exc


def begin_read(env: lmdb.Environment) -> lmdb.Transaction[memoryview]:
    """A read transaction whose values are views into the map, valid until it ends; it adopts
    a map grown by a writer in another process."""
    try:
        return env.begin(buffers=True)
    except lmdb.MapResizedError:
        env.set_mapsize(0)
        return env.begin(buffers=True)


def _find_madvise() -> Any:
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_MADVISE = _find_madvise()


def release_mapped_pages(data_file: Path) -> None:
    """Drop this process's mapping of the store file's pages (Linux); they stay in the page
    cache and a later read maps them again. Harmless to concurrent readers."""
    if _MADVISE is None:
        return
    try:
        inode = data_file.stat().st_ino
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] == str(inode) and fields[5].endswith("data.mdb"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            _MADVISE(start, end - start, mmap.MADV_DONTNEED)
