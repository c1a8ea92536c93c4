"""A SHA-256 whose state can be saved and restored, so an upload paused in one server
process can be resumed, and its hash finished, in another.

hashlib cannot export its state. OpenSSL, the library hashlib itself runs on, keeps
the state of its low-level SHA256 functions in a public struct; at a 64-byte block
boundary that state is just eight 32-bit words and the length. `save()` writes those
in a canonical form of its own (40 bytes: the words big-endian, then the byte count),
never the struct's bytes, so a saved state does not depend on the library's layout
or version. ctypes releases the GIL around each call, like hashlib does, so hashing
in a worker thread still overlaps the event loop.

Where libcrypto cannot be loaded (or fails the self-check below), `RESUMABLE` is
False, hashing falls back to hashlib and `save()` returns None: uploads then resume
only in the process that paused them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import struct
from typing import Any

BLOCK = 64  # bytes per SHA-256 block: states can be saved only at a multiple of this
_STATE = struct.Struct(">8IQ")  # the eight chaining words, then the bytes hashed so far


class _Context(ctypes.Structure):
    """OpenSSL's SHA256_CTX (`openssl/sha.h`), unchanged since 0.9.8."""

    _fields_ = [
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),  # bit count, low word
        ("Nh", ctypes.c_uint32),  # bit count, high word
        ("data", ctypes.c_uint32 * 16),
        ("num", ctypes.c_uint32),  # bytes buffered in `data`
        ("md_len", ctypes.c_uint32),
    ]


def _load() -> Any:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        for function in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
            getattr(lib, function).restype = ctypes.c_int
        lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return lib


_lib = _load()


class Sha256:
    """hashlib.sha256's `update`/`hexdigest`/`copy`, plus `save` and `restore`."""

    __slots__ = ("_context", "_fallback")

    def __init__(self) -> None:
        self._context = _Context()
        self._fallback: Any = None
        if _lib is None:
            self._fallback = hashlib.sha256()
        else:
            _lib.SHA256_Init(ctypes.byref(self._context))

    def update(self, data: bytes) -> None:
        """Hash `data` (bytes: ctypes passes them without a copy)."""
        if self._fallback is not None:
            self._fallback.update(data)
        else:
            _lib.SHA256_Update(ctypes.byref(self._context), data, len(data))

    def hexdigest(self) -> str:
        """The digest of everything hashed so far; the state itself is left as it is."""
        if self._fallback is not None:
            return str(self._fallback.hexdigest())
        final = self.copy()
        out = ctypes.create_string_buffer(32)
        _lib.SHA256_Final(out, ctypes.byref(final._context))
        return out.raw.hex()

    def copy(self) -> Sha256:
        """An independent hasher in the same state."""
        twin = Sha256.__new__(Sha256)
        twin._context = _Context.from_buffer_copy(self._context)
        twin._fallback = None if self._fallback is None else self._fallback.copy()
        return twin

    @property
    def length(self) -> int:
        """Bytes hashed so far."""
        if self._fallback is not None:
            raise TypeError("the hashlib fallback does not count its bytes")
        bits: int = (self._context.Nh << 32) | self._context.Nl
        return bits >> 3

    def save(self) -> bytes | None:
        """The state, if it stands at a block boundary and libcrypto is in use; else None."""
        if self._fallback is not None or self._context.num:
            return None
        return _STATE.pack(*self._context.h, self.length)

    @classmethod
    def restore(cls, state: bytes) -> Sha256 | None:
        """A hasher continuing from a saved state; None if it cannot (see `RESUMABLE`)."""
        if _lib is None or len(state) != _STATE.size:
            return None
        *words, length = _STATE.unpack(state)
        if length % BLOCK:
            return None
        hasher = cls()
        context = hasher._context
        context.h[:] = words
        bits = length * 8
        context.Nl, context.Nh = bits & 0xFFFFFFFF, bits >> 32
        return hasher


def _self_check() -> bool:
    """Whether the library agrees with hashlib across a save and a restore."""
    data = bytes(range(256)) * 3
    head = Sha256()
    head.update(data[: 2 * BLOCK])
    saved = head.save()
    resumed = Sha256.restore(saved) if saved is not None else None
    if resumed is None:
        return False
    resumed.update(data[2 * BLOCK :])
    return resumed.hexdigest() == hashlib.sha256(data).hexdigest()


if _lib is not None and not _self_check():
    _lib = None  # a libcrypto we do not understand: fall back to hashlib
RESUMABLE = _lib is not None
