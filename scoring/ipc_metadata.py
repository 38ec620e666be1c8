"""An Arrow IPC message's rows and uncompressed bytes, read from its flatbuffer metadata.

pyarrow tells neither before it decodes, and decompresses, a batch, and a few
megabytes of zstd can hold gigabytes; ``POST /predict/table`` reads them here
first (:func:`scoring.uploads.parse_body`), to refuse a stream beyond its limits
before any batch is decoded.
"""

from __future__ import annotations

import struct

import pyarrow as pa

# Field numbers of the Arrow IPC flatbuffers (format/Message.fbs): Message.header;
# DictionaryBatch.data; RecordBatch.length, .buffers and .compression.
_MESSAGE_HEADER, _DICTIONARY_DATA = 2, 1
_BATCH_LENGTH, _BATCH_BUFFERS, _BATCH_COMPRESSION = 0, 2, 3


def batch_sizes(message: pa.ipc.Message) -> tuple[int, int]:
    """Rows of a record or dictionary batch message and the bytes of its buffers once
    decompressed, read from the flatbuffer metadata (pyarrow exposes neither before it
    decodes the batch). A compressed buffer starts with its uncompressed length (-1:
    stored uncompressed), so the body is only peeked at, 8 bytes per buffer."""
    meta = memoryview(message.metadata)
    header = _field(meta, struct.unpack_from("<I", meta, 0)[0], _MESSAGE_HEADER)
    if header is None:
        raise ValueError("a batch message without a header")
    batch = _indirect(meta, header)
    if message.type == "dictionary":
        data = _field(meta, batch, _DICTIONARY_DATA)
        if data is None:
            raise ValueError("a dictionary batch without data")
        batch = _indirect(meta, data)
    at = _field(meta, batch, _BATCH_LENGTH)
    length = struct.unpack_from("<q", meta, at)[0] if at is not None else 0
    at = _field(meta, batch, _BATCH_BUFFERS)
    buffers = []
    if at is not None:
        vector = _indirect(meta, at)
        count = struct.unpack_from("<I", meta, vector)[0]
        buffers = [struct.unpack_from("<qq", meta, vector + 4 + 16 * i) for i in range(count)]
    if length < 0 or any(offset < 0 or stored < 0 for offset, stored in buffers):
        raise ValueError("negative length in a batch message")
    if _field(meta, batch, _BATCH_COMPRESSION) is None:
        return length, sum(stored for _, stored in buffers)
    body = memoryview(message.body) if message.body is not None else memoryview(b"")
    decoded = 0
    for offset, stored in buffers:
        if stored >= 8:
            prefix = struct.unpack_from("<q", body, offset)[0]
            decoded += stored - 8 if prefix == -1 else max(prefix, 0)
    return length, decoded


def _field(buf: memoryview, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at ``table`` is, or None when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    entry = 4 + 2 * index
    if entry >= struct.unpack_from("<H", buf, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", buf, vtable + entry)[0]
    return table + offset if offset else None


def _indirect(buf: memoryview, at: int) -> int:
    """The table or vector an offset field at ``at`` points to."""
    return int(at + struct.unpack_from("<I", buf, at)[0])
