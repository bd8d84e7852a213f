"""webdataset's tar iteration (tested: 1.0), outside its documented pipeline API.

The suite parses a shard's bytes itself (read whole, checked against the manifest's checksum), so it
uses webdataset's own tar reader and sample grouping from ``webdataset.tariterators`` rather than a
``WebDataset`` pipeline that opens URLs itself.
"""
from __future__ import annotations

from typing import IO, Any
from collections.abc import Iterator

from shortcutlm.compat import changed

PACKAGE, TESTED = "webdataset", "1.0"


def tar_samples(stream: IO[bytes], url: str) -> Iterator[dict[str, Any]]:
    """The samples of a WebDataset tar: ``{"__key__", "__url__", <ext>: bytes, ...}``, in file order."""
    try:
        from webdataset.tariterators import group_by_keys, tar_file_iterator
    except ImportError as err:
        raise changed(PACKAGE, TESTED, "webdataset.tariterators (group_by_keys, tar_file_iterator)") from err
    files = ({**f, "__url__": url} for f in tar_file_iterator(stream))
    return group_by_keys(files)
