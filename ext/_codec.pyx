"""The compiled codec: the twin of ``snapstate.codec._py``, built as ``snapstate.codec._native``.

Same behaviour, same bytes, same failures as the pure-Python reference. Where the reference
builds a tree for msgspec to write, this writes MessagePack itself in one pass over the value,
straight into the bytes object it returns; and it rebuilds typed objects (pydantic models,
dataclasses, tuples, ...) on load without Python-level dispatch. Decoding of plain MessagePack
is left to msgspec in both.

The format lives in ``snapstate/codec/_format.py``; constants are read from there at import.
"""

cimport cython
from cpython.object cimport PyObject, PyTypeObject
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.limits cimport INT_MAX as C_INT_MAX
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.dlfcn cimport RTLD_LOCAL, RTLD_NOW, dlopen, dlsym

import collections as _collections
import datetime as _dt
import decimal as _decimal
import ipaddress as _ipaddress
import pathlib as _pathlib
import re as _re
import sys as _sys
import uuid as _uuid
import zoneinfo as _zoneinfo

import lz4.block as _lz4
import msgspec as _msgspec
import xxhash as _xxhash

from snapstate.codec import _format as _F
from snapstate.codec import _registry as _reg

__all__ = ["Core"]

cdef extern from "Python.h":
    PyObject* PyBytes_FromStringAndSize(const char*, Py_ssize_t) except NULL
    char* PyBytes_AS_STRING(PyObject*)
    int _PyBytes_Resize(PyObject**, Py_ssize_t) except -1
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*)
    bint PyUnicode_IS_COMPACT_ASCII(object)
    object PyMemoryView_FromMemory(char*, Py_ssize_t, int)
    int PyBUF_READ
    void PyErr_Clear()
    PyObject* PyErr_Occurred()
    int PyErr_ExceptionMatches(object)
    int PyDict_Next(object, Py_ssize_t*, PyObject**, PyObject**)
    Py_ssize_t PyDict_GET_SIZE(object)
    Py_ssize_t PyList_GET_SIZE(object)
    PyObject* PyList_GET_ITEM(object, Py_ssize_t)
    Py_ssize_t PyTuple_GET_SIZE(object)
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object) except? -1
    double PyFloat_AS_DOUBLE(object)
    char* PyByteArray_AS_STRING(object)
    Py_ssize_t PyByteArray_GET_SIZE(object)
    int PyObject_GenericSetAttr(object, object, object) except -1
    int PySet_Contains(object, object) except -1
    int PySet_Add(object, object) except -1
    object PyList_AsTuple(object)
    object PyUnicode_DecodeUTF8(const char*, Py_ssize_t, const char*)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void* PyUnicode_DATA(object)
    object PyBytes_FromStringAndSize_obj "PyBytes_FromStringAndSize"(const char*, Py_ssize_t)
    object PyList_New(Py_ssize_t)
    void PyList_SET_ITEM(object, Py_ssize_t, object)
    object PyTuple_New(Py_ssize_t)
    void PyTuple_SET_ITEM(object, Py_ssize_t, object)

# Compile-time size of the path arrays; checked against the format at import.
cdef enum:
    MAXD = 100
    # Nesting the reader accepts (containers and extension values); deeper input is corrupt.
    MAX_NEST = 1000
    # Map keys and class names up to this many bytes are cached (see Core.key_str).
    KEY_MAX = 64
    KEY_BITS = 10
    KEY_SLOTS = 1024  # 1 << KEY_BITS

if MAXD != _F.MAX_DEPTH or MAX_NEST != _F.MAX_NEST:
    raise ImportError("snapstate.codec._native was built for another format; rebuild it")

cdef int EXT_TUPLE = _F.EXT_TUPLE
cdef int EXT_SET = _F.EXT_SET
cdef int EXT_FROZENSET = _F.EXT_FROZENSET
cdef int EXT_BYTEARRAY = _F.EXT_BYTEARRAY
cdef int EXT_BIGINT = _F.EXT_BIGINT
cdef int EXT_STR = _F.EXT_STR
cdef int EXT_DATETIME = _F.EXT_DATETIME
cdef int EXT_DATE = _F.EXT_DATE
cdef int EXT_TIME = _F.EXT_TIME
cdef int EXT_TIMEDELTA = _F.EXT_TIMEDELTA
cdef int EXT_TIMEZONE = _F.EXT_TIMEZONE
cdef int EXT_ZONEINFO = _F.EXT_ZONEINFO
cdef int EXT_UUID = _F.EXT_UUID
cdef int EXT_DECIMAL = _F.EXT_DECIMAL
cdef int EXT_PATH = _F.EXT_PATH
cdef int EXT_DEQUE = _F.EXT_DEQUE
cdef int EXT_ENUM = _F.EXT_ENUM
cdef int EXT_DATACLASS = _F.EXT_DATACLASS
cdef int EXT_NAMEDTUPLE = _F.EXT_NAMEDTUPLE
cdef int EXT_STRUCT = _F.EXT_STRUCT
cdef int EXT_PYDANTIC = _F.EXT_PYDANTIC
cdef int EXT_OBJECT = _F.EXT_OBJECT
cdef int EXT_EXCEPTION = _F.EXT_EXCEPTION
cdef int EXT_NDARRAY = _F.EXT_NDARRAY
cdef int EXT_IPADDRESS = _F.EXT_IPADDRESS
cdef int EXT_PATTERN = _F.EXT_PATTERN
cdef int HEADER_SIZE = _F.HEADER_SIZE
cdef int FLAG_LZ4 = _F.FLAG_LZ4
cdef int KNOWN_FLAGS = _F.KNOWN_FLAGS
cdef int FORMAT_VERSION = _F.FORMAT_VERSION
cdef Py_ssize_t MAX_RATIO = _F.MAX_RATIO
cdef Py_ssize_t MAXSIZE = _sys.maxsize

cdef object EncodeFailure = _F.EncodeFailure
cdef object BadData = _F.BadData
cdef object Unregistered = _F.Unregistered
cdef object UnknownVersion = _F.UnknownVersion
cdef object EXT_NAMES = _F.EXT_NAMES
cdef object KNOWN_VERSIONS = _F.KNOWN_VERSIONS
cdef int CHUNKED_VERSION = _F.CHUNKED_VERSION
cdef Py_ssize_t CHUNK_SIZE = _F.CHUNK_SIZE
cdef object pack_chunks = _F.pack_chunks
cdef object unchunked = _F.unchunked
cdef object too_deep = _F.too_deep
cdef object safe_repr = _F.safe_repr
cdef object xxh3_64 = _xxhash.xxh3_64_intdigest


cdef void* module_handle(object module):
    """The dlopen handle of an extension module already imported (dlopen only hands back the
    handle of a library it has loaded), for its exported C functions; NULL if none."""
    return dlopen(module.__file__.encode(), RTLD_NOW | RTLD_LOCAL)


# XXH3-64 as xxhash's own extension exports it (the same build of the library), called holding
# the GIL: xxhash's Python function lets go of it for a large buffer given as a memoryview, and
# taking it back then waits for any other thread running Python (5 ms in the interpreter's
# default switch interval; measured on a 620 KB buffer with one other thread busy: 5.1 ms,
# against 0.01 ms for the hash itself). Should the symbol be missing, the module calls xxhash.
ctypedef uint64_t (*xxh3_64_t)(const void*, size_t) noexcept nogil
cdef xxh3_64_t c_xxh3_64 = NULL


cdef bint bind_xxh3():
    global c_xxh3_64
    import xxhash._xxhash as _x

    cdef void* handle = module_handle(_x)
    if handle == NULL:
        return False
    # The build that picks the fastest instructions this CPU has, else the portable one: the
    # same function of the bytes either way.
    cdef void* fn = dlsym(handle, "XXH3_64bits_dispatch")
    if fn == NULL:
        fn = dlsym(handle, "XXH3_64bits")
    if fn == NULL:
        return False
    c_xxh3_64 = <xxh3_64_t>fn
    return True


try:
    _XXH3_DIRECT = bind_xxh3()
except Exception:
    _XXH3_DIRECT = False


cdef uint32_t checksum(const char* p, Py_ssize_t n) except? 0:
    # _format.checksum, over memory: the low 32 bits of XXH3-64.
    cdef uint64_t h
    if c_xxh3_64 != NULL:
        h = c_xxh3_64(p, <size_t>n)
    else:
        h = xxh3_64(PyMemoryView_FromMemory(<char*>p, n, PyBUF_READ))
    return <uint32_t>(h & 0xFFFFFFFF)

# A stored value's sizes and checksum: 4 bytes, little-endian.
cdef inline void put_u32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>(v & 0xFF)
    p[1] = <char>((v >> 8) & 0xFF)
    p[2] = <char>((v >> 16) & 0xFF)
    p[3] = <char>((v >> 24) & 0xFF)


cdef inline uint32_t get_u32(const char* p) noexcept nogil:
    cdef const unsigned char* q = <const unsigned char*>p
    return <uint32_t>q[0] | (<uint32_t>q[1] << 8) | (<uint32_t>q[2] << 16) | (<uint32_t>q[3] << 24)


cdef object info_for = _reg.info_for
cdef object _INFO = _reg._INFO
cdef object StoredException = _reg.StoredException

cdef object Ext = _msgspec.msgpack.Ext
cdef object lz4_compress = _lz4.compress
cdef object lz4_decompress = _lz4.decompress
cdef object LZ4BlockError = _lz4.LZ4BlockError

# -- lz4 without releasing the GIL -------------------------------------------------------------
#
# lz4.block releases the GIL around every call. For the values a checkpoint holds (a few KB,
# under a microsecond of lz4) that costs more than it saves: a saver runs in a worker thread
# (LangGraph's background executor) while the graph's own thread runs Python, and taking the GIL
# back then waits for that thread to give it up. Measured with one other thread running Python:
# lz4.block.compress of 1.5 KB, median 0.7 us but mean 233 us; in the LangGraph chat benchmark
# that made compression cost 42 us a step. So this module calls the LZ4 functions that
# lz4.block's own extension exports (the same build of LZ4), holding the GIL, the way
# lz4.block.compress and decompress call them with their defaults (a fresh stream state and
# LZ4_compress_fast_continue at acceleration 1; a 4-byte little-endian size first), so the bytes
# are those of the pure twin. Should a symbol be missing, the module falls back to lz4.block
# (``_LZ4_DIRECT`` says which).

ctypedef int (*lz4_compress_continue_t)(void*, const char*, char*, int, int, int) noexcept nogil
ctypedef void (*lz4_reset_stream_t)(void*) noexcept nogil
ctypedef int (*lz4_int_t)(int) noexcept nogil
ctypedef int (*lz4_size_t)() noexcept nogil
ctypedef int (*lz4_decompress_safe_t)(const char*, char*, int, int) noexcept nogil

cdef lz4_compress_continue_t c_lz4_compress = NULL
cdef lz4_reset_stream_t c_lz4_reset = NULL
cdef lz4_int_t c_lz4_bound = NULL
cdef lz4_decompress_safe_t c_lz4_decompress = NULL
cdef int lz4_state_size = 0


cdef bint bind_lz4():
    global c_lz4_compress, c_lz4_reset, c_lz4_bound, c_lz4_decompress, lz4_state_size
    import lz4.block._block as _block

    cdef void* handle = module_handle(_block)
    if handle == NULL:
        return False
    cdef void* compress = dlsym(handle, "LZ4_compress_fast_continue")
    cdef void* reset = dlsym(handle, "LZ4_resetStream")
    cdef void* bound = dlsym(handle, "LZ4_compressBound")
    cdef void* size = dlsym(handle, "LZ4_sizeofState")
    cdef void* decompress = dlsym(handle, "LZ4_decompress_safe")
    if NULL in (compress, reset, bound, size, decompress):
        return False
    c_lz4_compress = <lz4_compress_continue_t>compress
    c_lz4_reset = <lz4_reset_stream_t>reset
    c_lz4_bound = <lz4_int_t>bound
    c_lz4_decompress = <lz4_decompress_safe_t>decompress
    lz4_state_size = (<lz4_size_t>size)()
    return lz4_state_size > 0


try:
    _LZ4_DIRECT = bind_lz4()
except Exception:
    _LZ4_DIRECT = False


cdef object lz4_pack(const char* src, Py_ssize_t n):
    """``lz4.block.compress`` of ``src[:n]`` (default mode, size stored)."""
    if not _LZ4_DIRECT or n > C_INT_MAX - 4096:
        return lz4_compress(PyMemoryView_FromMemory(<char*>src, n, PyBUF_READ))
    cdef void* state = PyMem_Malloc(lz4_state_size)
    if state == NULL:
        raise MemoryError()
    cdef int bound = c_lz4_bound(<int>n)
    cdef PyObject* out
    try:
        out = PyBytes_FromStringAndSize(NULL, 4 + bound)
    except BaseException:
        PyMem_Free(state)
        raise
    cdef char* p = PyBytes_AS_STRING(out)
    put_u32(p, <uint32_t>n)
    c_lz4_reset(state)
    cdef int k = c_lz4_compress(state, src, p + 4, <int>n, bound, 1)
    PyMem_Free(state)
    if k <= 0:
        Py_DECREF(<object>out)
        raise LZ4BlockError("Compression failed")
    _PyBytes_Resize(&out, 4 + k)
    result = <object>out
    Py_DECREF(result)
    return result


# -- a large document's chunks, compressed on several threads --------------------------------
#
# The pure twin compresses a CHUNKED_VERSION document's chunks with lz4.block on the caller's
# thread and a pool of Python threads (_format.pack_chunks). Each of those threads needs the GIL
# again for every chunk, and gets it late while another thread runs Python: a 1 MB document
# then took 17.8 to 23.6 ms to encode, against 7.1 to 7.4 ms here (1.85 to 1.90 against 1.90
# to 2.01 ms with nothing else running; docs/codec.md). Here the helpers are plain threads that
# never touch Python (nor the GIL): each takes the next chunk left, compresses it as lz4_pack
# does, and stores the block in its own slot of the output; the caller, having let go of the
# GIL once (so that the graph's thread runs meanwhile), does the same, then waits for them and
# packs the blocks together. The bytes are the pure twin's.

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t* thread, const void* attr,
                       void* (*start)(void*) noexcept nogil, void* arg)
    int pthread_join(pthread_t thread, void** result)

cdef extern from *:
    """
    static int snapstate_take_chunk(int *next) {
        return __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
    }
    """
    int snapstate_take_chunk(int* next) noexcept nogil

cdef enum:
    # At most this many helper threads per document (_format._HELPERS: at most 3).
    MAX_CHUNK_HELPERS = 8

ctypedef struct ChunkJob:
    const char* src      # the document
    Py_ssize_t size      # its length
    int count            # its chunks: CHUNK_SIZE bytes each, the last one shorter
    int bound            # LZ4_compressBound(CHUNK_SIZE)
    char* slots          # chunk i's block (its 4-byte size first) at slots + i * (4 + bound)
    int* lengths         # each block's length, its size included; 0: not compressed
    int next             # the next chunk to take


cdef void compress_chunks(ChunkJob* job) noexcept nogil:
    """Compress the chunks no thread has taken yet, one at a time, until none is left."""
    cdef void* state = malloc(lz4_state_size)
    cdef int i, k, n
    cdef char* out
    if state == NULL:
        return  # the other threads take what this one leaves; a chunk no one took fails
    while True:
        i = snapstate_take_chunk(&job.next)
        if i >= job.count:
            break
        n = <int>min(<Py_ssize_t>CHUNK_SIZE, job.size - <Py_ssize_t>i * CHUNK_SIZE)
        out = job.slots + <Py_ssize_t>i * (4 + job.bound)
        put_u32(out, <uint32_t>n)
        c_lz4_reset(state)
        k = c_lz4_compress(state, job.src + <Py_ssize_t>i * CHUNK_SIZE, out + 4, n, job.bound, 1)
        job.lengths[i] = k + 4 if k > 0 else 0
    free(state)


cdef void* chunk_helper(void* job) noexcept nogil:
    compress_chunks(<ChunkJob*>job)
    return NULL


cdef object pack_chunks_native(const char* src, Py_ssize_t size):
    """The whole stored value of a CHUNKED_VERSION document ``src[:size]`` (header and the
    payload _format.pack_chunks makes), or None when that is not shorter than the document."""
    cdef ChunkJob job
    cdef Py_ssize_t count = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
    cdef int bound = c_lz4_bound(<int>CHUNK_SIZE)
    cdef Py_ssize_t table = 8 + 4 * count
    cdef Py_ssize_t total = table
    cdef Py_ssize_t i
    cdef int helpers = min(max(<int>_F._HELPERS, 0), <int>count - 1, MAX_CHUNK_HELPERS)
    cdef pthread_t threads[MAX_CHUNK_HELPERS]
    cdef int started = 0
    cdef char* p
    cdef char* dst
    cdef uint32_t crc
    cdef int* lengths = <int*>PyMem_Malloc(count * sizeof(int))
    if lengths == NULL:
        raise MemoryError()
    cdef PyObject* out
    try:
        out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + table + count * (4 + bound))
    except BaseException:
        PyMem_Free(lengths)
        raise
    memset(lengths, 0, count * sizeof(int))
    p = PyBytes_AS_STRING(out)
    job.src = src
    job.size = size
    job.count = <int>count
    job.bound = bound
    job.slots = p + HEADER_SIZE + table
    job.lengths = lengths
    job.next = 0
    while started < helpers:
        if pthread_create(&threads[started], NULL, chunk_helper, &job) != 0:
            break  # no thread to be had: the caller compresses the rest
        started += 1
    with nogil:
        compress_chunks(&job)
        for i in range(started):
            pthread_join(threads[i], NULL)
    # Pack the blocks together after their lengths: each moves down (or stays), never up.
    dst = job.slots
    for i in range(count):
        if lengths[i] == 0:
            PyMem_Free(lengths)
            Py_DECREF(<object>out)
            raise MemoryError("no memory to compress a chunk of a large value")
        put_u32(p + HEADER_SIZE + 8 + 4 * i, <uint32_t>lengths[i])
        if dst != job.slots + i * (4 + bound):
            memmove(dst, job.slots + i * (4 + bound), lengths[i])
        dst += lengths[i]
        total += lengths[i]
    PyMem_Free(lengths)
    if total >= size:
        Py_DECREF(<object>out)
        return None
    put_u32(p + HEADER_SIZE, <uint32_t>size)
    put_u32(p + HEADER_SIZE + 4, <uint32_t>count)
    try:
        crc = checksum(p + HEADER_SIZE, total)
    except BaseException:
        Py_DECREF(<object>out)
        raise
    p[0] = <char>CHUNKED_VERSION
    p[1] = <char>FLAG_LZ4
    put_u32(p + 2, crc)
    _PyBytes_Resize(&out, HEADER_SIZE + total)
    result = <object>out
    Py_DECREF(result)
    return result


cdef object unchunk_native(int flags, const char* src, Py_ssize_t n):
    """_format.unchunked of the payload ``src[:n]``, with its checks and its words, each chunk
    decompressed holding the GIL into its place in the document (lz4.block would let go of the
    GIL for every chunk: with another thread running Python, a 1 MB value took 26 ms to decode
    that way against 0.5 ms alone)."""
    if not flags & FLAG_LZ4:
        raise BadData("chunked payload without the compression flag")
    if n < 8:
        raise BadData("truncated chunked payload")
    cdef uint32_t size = get_u32(src)
    cdef uint32_t count = get_u32(src + 4)
    if size > MAX_RATIO * n:
        raise BadData(f"corrupt compressed payload (claims {size} bytes)")
    if <Py_ssize_t>count != (<Py_ssize_t>size + CHUNK_SIZE - 1) // CHUNK_SIZE or count < 2:
        raise BadData(f"corrupt chunked payload ({count} chunks for {size} bytes)")
    cdef Py_ssize_t start = 8 + 4 * <Py_ssize_t>count
    if n < start:
        raise BadData("truncated chunked payload")
    cdef Py_ssize_t total = start
    cdef uint32_t i
    for i in range(count):
        total += get_u32(src + 8 + 4 * i)
    if total != n:
        raise BadData("corrupt chunked payload (chunk lengths do not match its size)")
    cdef PyObject* out = PyBytes_FromStringAndSize(NULL, size)
    body = <object>out
    Py_DECREF(body)
    cdef char* dst = PyBytes_AS_STRING(out)
    cdef uint32_t length, expected
    cdef int k
    for i in range(count):
        length = get_u32(src + 8 + 4 * i)
        expected = <uint32_t>min(<Py_ssize_t>CHUNK_SIZE,
                                 <Py_ssize_t>size - <Py_ssize_t>i * CHUNK_SIZE)
        if length < 4 or get_u32(src + start) != expected:
            raise BadData(f"corrupt chunked payload (chunk {i} is not {expected} bytes)")
        k = c_lz4_decompress(src + start + 4, dst, <int>(length - 4), <int>expected)
        if k != <int>expected:
            raise BadData(f"corrupt compressed payload (chunk {i})")
        dst += expected
        start += length
    return body


cdef object lz4_unpack(const char* src, Py_ssize_t n, uint32_t size):
    """``lz4.block.decompress`` of ``src[:n]``, whose first 4 bytes hold ``size``."""
    if not _LZ4_DIRECT or n > C_INT_MAX or size > <uint32_t>C_INT_MAX:
        return lz4_decompress(PyMemoryView_FromMemory(<char*>src, n, PyBUF_READ))
    cdef PyObject* out = PyBytes_FromStringAndSize(NULL, size)
    cdef int k = c_lz4_decompress(src + 4, PyBytes_AS_STRING(out), <int>(n - 4), <int>size)
    result = <object>out
    Py_DECREF(result)
    if k != <int>size:
        raise LZ4BlockError("corrupt input or a size that does not match the header")
    return result

cdef type T_datetime = _dt.datetime
cdef type T_date = _dt.date
cdef type T_time = _dt.time
cdef type T_timedelta = _dt.timedelta
cdef type T_timezone = _dt.timezone
cdef type T_zoneinfo = _zoneinfo.ZoneInfo
cdef type T_uuid = _uuid.UUID
cdef type T_decimal = _decimal.Decimal
cdef type T_deque = _collections.deque
cdef tuple PATH_TYPES = tuple(getattr(_pathlib, name) for name in _F.PATH_KINDS)
cdef tuple IP_TYPES = tuple(getattr(_ipaddress, name) for name in _F.IP_KINDS)
cdef type T_pattern = _re.Pattern

cdef object INT_MAX = _F.INT_MAX
cdef object S_DICT = "__dict__"
cdef object S_FIELDS_SET = "__pydantic_fields_set__"
cdef object S_EXTRA = "__pydantic_extra__"
cdef object S_PRIVATE = "__pydantic_private__"
cdef object S_VALUE = "value"
cdef object S_TZINFO = "tzinfo"
cdef object _MISSING = object()
cdef object object_new = object.__new__
cdef tuple EMPTY = ()


cdef inline object new_instance(object cls):
    # object.__new__(cls) without the Python-level call; ``cls`` is a class from the registry.
    return (<PyTypeObject*>object).tp_new(<type>cls, <PyObject*>EMPTY, NULL)


cdef inline void put16(char* p, uint64_t x) noexcept:
    p[0] = <char>(x >> 8)
    p[1] = <char>x


cdef inline void put32(char* p, uint64_t x) noexcept:
    p[0] = <char>(x >> 24)
    p[1] = <char>(x >> 16)
    p[2] = <char>(x >> 8)
    p[3] = <char>x


cdef inline void put64(char* p, uint64_t x) noexcept:
    put32(p, x >> 32)
    put32(p + 4, x & 0xFFFFFFFF)


# -- encoding ----------------------------------------------------------------------------------


@cython.final
cdef class _Encoder:
    """One encode call: the growing output and the path to the value being written."""

    cdef PyObject* out  # a bytes object, owned, resized as it grows
    cdef char* buf
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef Core core
    cdef int seg_kind[MAXD + 2]
    cdef Py_ssize_t seg_idx[MAXD + 2]
    cdef PyObject* seg_obj[MAXD + 2]  # borrowed: the container holding it is alive

    def __cinit__(self, Core core):
        self.core = core
        self.cap = 512
        self.out = PyBytes_FromStringAndSize(NULL, self.cap)
        self.buf = PyBytes_AS_STRING(self.out)
        self.n = HEADER_SIZE

    def __dealloc__(self):
        Py_XDECREF(self.out)

    cdef int grow(self, Py_ssize_t k) except -1:
        cdef Py_ssize_t cap = self.cap * 2
        if cap < self.n + k:
            cap = self.n + k
        _PyBytes_Resize(&self.out, cap)
        self.buf = PyBytes_AS_STRING(self.out)
        self.cap = cap
        return 0

    cdef inline char* take(self, Py_ssize_t k) except NULL:
        if self.n + k > self.cap:
            self.grow(k)
        cdef char* p = self.buf + self.n
        self.n += k
        return p

    cdef object fail(self, str problem, object hint, int depth):
        """An EncodeFailure with the path to the value at ``depth`` (innermost first)."""
        f = EncodeFailure(problem, hint)
        path = f.path
        cdef int d, kind
        for d in range(depth, 0, -1):
            kind = self.seg_kind[d]
            if kind == 0:
                path.append((0, self.seg_idx[d]))
            elif kind == 3:
                path.append((3, None))
            else:
                path.append((kind, <object>self.seg_obj[d]))
        return f

    # -- MessagePack primitives (the same choices msgspec makes) -------------------------------

    cdef int w_int(self, object v) except -1:
        cdef int overflow = 0
        cdef long long x = PyLong_AsLongLongAndOverflow(v, &overflow)
        cdef unsigned long long u
        cdef char* p
        if overflow == 0:
            if x >= 0:
                u = <unsigned long long>x
                if u < 128:
                    p = self.take(1)
                    p[0] = <char>u
                elif u <= 0xFF:
                    p = self.take(2)
                    p[0] = <char>0xCC
                    p[1] = <char>u
                elif u <= 0xFFFF:
                    p = self.take(3)
                    p[0] = <char>0xCD
                    put16(p + 1, u)
                elif u <= 0xFFFFFFFF:
                    p = self.take(5)
                    p[0] = <char>0xCE
                    put32(p + 1, u)
                else:
                    p = self.take(9)
                    p[0] = <char>0xCF
                    put64(p + 1, u)
            elif x >= -32:
                p = self.take(1)
                p[0] = <char>x
            elif x >= -128:
                p = self.take(2)
                p[0] = <char>0xD0
                p[1] = <char>x
            elif x >= -32768:
                p = self.take(3)
                p[0] = <char>0xD1
                put16(p + 1, <uint64_t>x)
            elif x >= -2147483648:
                p = self.take(5)
                p[0] = <char>0xD2
                put32(p + 1, <uint64_t>x)
            else:
                p = self.take(9)
                p[0] = <char>0xD3
                put64(p + 1, <uint64_t>x)
            return 0
        if overflow > 0 and v <= INT_MAX:
            u = PyLong_AsUnsignedLongLong(v)
            p = self.take(9)
            p[0] = <char>0xCF
            put64(p + 1, u)
            return 0
        raw = v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
        return self.w_raw_ext(EXT_BIGINT, raw, len(raw))

    cdef int w_float(self, double x) except -1:
        cdef uint64_t bits
        memcpy(&bits, &x, 8)
        cdef char* p = self.take(9)
        p[0] = <char>0xCB
        put64(p + 1, bits)
        return 0

    cdef int w_str(self, object v) except -1:
        cdef Py_ssize_t size
        cdef const char* s
        cdef char* p
        if PyUnicode_IS_COMPACT_ASCII(v):
            s = <const char*>PyUnicode_DATA(v)
            size = PyUnicode_GET_LENGTH(v)
        else:
            s = PyUnicode_AsUTF8AndSize(v, &size)
        if s == NULL:
            if not PyErr_ExceptionMatches(UnicodeEncodeError):
                return -1
            PyErr_Clear()
            raw = v.encode("utf-8", "surrogatepass")
            return self.w_raw_ext(EXT_STR, raw, len(raw))
        if size < 32:
            p = self.take(1 + size)
            p[0] = <char>(0xA0 | size)
            p += 1
        elif size < 256:
            p = self.take(2 + size)
            p[0] = <char>0xD9
            p[1] = <char>size
            p += 2
        elif size < 65536:
            p = self.take(3 + size)
            p[0] = <char>0xDA
            put16(p + 1, size)
            p += 3
        else:
            if size > 0xFFFFFFFF:
                raise self.fail("a str longer than 4 GiB", None, 0)
            p = self.take(5 + size)
            p[0] = <char>0xDB
            put32(p + 1, size)
            p += 5
        memcpy(p, s, size)
        return 0

    cdef int w_bin(self, const char* s, Py_ssize_t size) except -1:
        cdef char* p
        if size < 256:
            p = self.take(2 + size)
            p[0] = <char>0xC4
            p[1] = <char>size
            p += 2
        elif size < 65536:
            p = self.take(3 + size)
            p[0] = <char>0xC5
            put16(p + 1, size)
            p += 3
        else:
            if size > 0xFFFFFFFF:
                raise self.fail("bytes longer than 4 GiB", None, 0)
            p = self.take(5 + size)
            p[0] = <char>0xC6
            put32(p + 1, size)
            p += 5
        memcpy(p, s, size)
        return 0

    cdef int w_array(self, Py_ssize_t size) except -1:
        cdef char* p
        if size < 16:
            p = self.take(1)
            p[0] = <char>(0x90 | size)
        elif size < 65536:
            p = self.take(3)
            p[0] = <char>0xDC
            put16(p + 1, size)
        else:
            p = self.take(5)
            p[0] = <char>0xDD
            put32(p + 1, size)
        return 0

    cdef int w_map(self, Py_ssize_t size) except -1:
        cdef char* p
        if size < 16:
            p = self.take(1)
            p[0] = <char>(0x80 | size)
        elif size < 65536:
            p = self.take(3)
            p[0] = <char>0xDE
            put16(p + 1, size)
        else:
            p = self.take(5)
            p[0] = <char>0xDF
            put32(p + 1, size)
        return 0

    cdef int w_byte(self, int b) except -1:
        cdef char* p = self.take(1)
        p[0] = <char>b
        return 0

    cdef int w_ext_header(self, int code, Py_ssize_t size, char* p) except -1:
        """Write the header of an extension of ``size`` bytes at ``p``; returns its length."""
        if size == 1 or size == 2 or size == 4 or size == 8 or size == 16:
            p[0] = <char>(0xD4 if size == 1 else 0xD5 if size == 2 else 0xD6 if size == 4
                          else 0xD7 if size == 8 else 0xD8)
            p[1] = <char>code
            return 2
        if size < 256:
            p[0] = <char>0xC7
            p[1] = <char>size
            p[2] = <char>code
            return 3
        if size < 65536:
            p[0] = <char>0xC8
            put16(p + 1, size)
            p[3] = <char>code
            return 4
        if size > 0xFFFFFFFF:
            raise self.fail("a value longer than 4 GiB", None, 0)
        p[0] = <char>0xC9
        put32(p + 1, size)
        p[5] = <char>code
        return 6

    cdef int w_raw_ext(self, int code, object raw, Py_ssize_t size) except -1:
        cdef const char* s = raw
        cdef char header[6]
        cdef int h = self.w_ext_header(code, size, header)
        cdef char* p = self.take(h + size)
        memcpy(p, header, h)
        memcpy(p + h, s, size)
        return 0

    cdef inline Py_ssize_t begin_ext(self) except -1:
        """Reserve room for the largest extension header; its payload follows."""
        cdef Py_ssize_t start = self.n
        self.take(6)
        return start

    cdef int end_ext(self, Py_ssize_t start, int code) except -1:
        cdef Py_ssize_t size = self.n - start - 6
        cdef char header[6]
        cdef int h = self.w_ext_header(code, size, header)
        cdef char* p = self.buf + start
        if h != 6:
            memmove(p + h, p + 6, size)
        memcpy(p, header, h)
        self.n = start + h + size
        return 0

    # -- values --------------------------------------------------------------------------------

    cdef int value(self, object v, int depth) except -1:
        cdef type t = type(v)
        if t is str:
            return self.w_str(v)
        if t is int:
            return self.w_int(v)
        if t is float:
            return self.w_float(PyFloat_AS_DOUBLE(v))
        if t is bool:
            return self.w_byte(0xC3 if v is True else 0xC2)
        if v is None:
            return self.w_byte(0xC0)
        if t is bytes:
            return self.w_bin(PyBytes_AS_STRING(<PyObject*>v), len(<bytes>v))
        if depth >= MAXD:
            raise self.fail(too_deep(t).problem, None, depth)
        depth += 1
        if t is list:
            return self.w_list(v, depth)
        if t is dict:
            return self.w_dict(v, depth)
        cdef Py_ssize_t start
        if t is tuple:
            start = self.begin_ext()
            self.w_tuple_items(v, depth)
            return self.end_ext(start, EXT_TUPLE)
        if t is set:
            return self.w_set(v, depth, EXT_SET)
        if t is frozenset:
            return self.w_set(v, depth, EXT_FROZENSET)
        if t is bytearray:
            return self.w_raw_ext(EXT_BYTEARRAY, bytes(v), PyByteArray_GET_SIZE(v))
        if t is T_datetime:
            return self.w_datetime(v, depth)
        if t is T_date:
            start = self.begin_ext()
            self.w_array(3)
            self.w_int(v.year)
            self.w_int(v.month)
            self.w_int(v.day)
            return self.end_ext(start, EXT_DATE)
        if t is T_time:
            return self.w_time(v, depth)
        if t is T_timedelta:
            start = self.begin_ext()
            self.w_array(3)
            self.w_int(v.days)
            self.w_int(v.seconds)
            self.w_int(v.microseconds)
            return self.end_ext(start, EXT_TIMEDELTA)
        if t is T_timezone:
            return self.w_timezone(v, depth)
        if t is T_zoneinfo:
            key = v.key
            if key is None:
                raise self.fail(
                    "a `zoneinfo.ZoneInfo` without a key (read from a file)", None, depth - 1
                )
            raw = key.encode("utf-8", "surrogatepass")
            return self.w_raw_ext(EXT_ZONEINFO, raw, len(raw))
        if t is T_uuid:
            raw = v.bytes
            return self.w_raw_ext(EXT_UUID, raw, len(raw))
        if t is T_decimal:
            raw = str(v).encode("ascii")
            return self.w_raw_ext(EXT_DECIMAL, raw, len(raw))
        if t is T_deque:
            return self.w_deque(v, depth)
        if t in PATH_TYPES:
            return self.w_kind_text(EXT_PATH, PATH_TYPES.index(t), v, depth)
        if t in IP_TYPES:
            return self.w_kind_text(EXT_IPADDRESS, IP_TYPES.index(t), v, depth)
        if t is T_pattern:
            try:
                flags = _F.pattern_flags(v)
            except EncodeFailure as f:
                raise self.fail(f.problem, f.hint, depth - 1)
            start = self.begin_ext()
            self.w_array(2)
            self.value(v.pattern, depth)
            self.w_int(flags)
            return self.end_ext(start, EXT_PATTERN)
        return self.w_object(v, t, depth)

    cdef int w_kind_text(self, int code, Py_ssize_t kind, object v, int depth) except -1:
        """``[kind, str(v)]`` under ``code``: a path or an ipaddress value."""
        cdef Py_ssize_t start = self.begin_ext()
        self.w_array(2)
        self.w_int(kind)
        self.value(str(v), depth)
        return self.end_ext(start, code)

    cdef int w_list(self, list v, int depth) except -1:
        cdef Py_ssize_t i, size = PyList_GET_SIZE(v)
        self.w_array(size)
        self.seg_kind[depth] = 0
        for i in range(size):
            if i >= PyList_GET_SIZE(v):
                raise self.fail("a list changed size while it was being encoded", None, depth - 1)
            self.seg_idx[depth] = i
            self.value(<object>PyList_GET_ITEM(v, i), depth)
        return 0

    cdef int w_tuple_items(self, tuple v, int depth) except -1:
        cdef Py_ssize_t i, size = PyTuple_GET_SIZE(v)
        self.w_array(size)
        self.seg_kind[depth] = 0
        for i in range(size):
            self.seg_idx[depth] = i
            self.value(<object>PyTuple_GET_ITEM(v, i), depth)
        return 0

    cdef int w_dict(self, dict v, int depth) except -1:
        cdef Py_ssize_t pos = 0, count = 0, size = PyDict_GET_SIZE(v)
        cdef PyObject* kp
        cdef PyObject* xp
        self.w_map(size)
        while PyDict_Next(v, &pos, &kp, &xp):
            k = <object>kp
            x = <object>xp
            if type(k) is str:
                self.w_str(k)
            else:
                self.seg_kind[depth] = 3
                self.value(k, depth)
            self.seg_kind[depth] = 2
            self.seg_obj[depth] = kp
            self.value(x, depth)
            count += 1
        if count != size:
            raise self.fail(
                "a mapping changed size while it was being encoded", None, depth - 1
            )
        return 0

    cdef int w_pairs(self, list pairs, int depth, int seg, bint fallback) except -1:
        """A map from a list of (key, value) tuples; keys are attribute names (seg 1)."""
        cdef Py_ssize_t i, mark, size = PyList_GET_SIZE(pairs)
        self.w_map(size)
        for i in range(size):
            pair = <tuple>PyList_GET_ITEM(pairs, i)
            k = <object>PyTuple_GET_ITEM(pair, 0)
            x = <object>PyTuple_GET_ITEM(pair, 1)
            if type(k) is str:
                self.w_str(k)
            else:
                self.seg_kind[depth] = 3
                self.value(k, depth)
            self.seg_kind[depth] = seg
            self.seg_obj[depth] = <PyObject*>k
            if not fallback:
                self.value(x, depth)
                continue
            mark = self.n
            try:
                self.value(x, depth)
            except EncodeFailure:
                self.n = mark
                self.value(safe_repr(x), depth)
        return 0

    cdef int w_set(self, object v, int depth, int code) except -1:
        try:
            items = sorted(v)
        except Exception:
            items = list(v)
        cdef Py_ssize_t start = self.begin_ext()
        self.w_list(items, depth)
        return self.end_ext(start, code)

    cdef int w_tz(self, object tz, int depth) except -1:
        self.seg_kind[depth] = 1
        self.seg_obj[depth] = <PyObject*>S_TZINFO
        return self.value(tz, depth)

    cdef int w_datetime(self, object v, int depth) except -1:
        cdef Py_ssize_t start = self.begin_ext()
        tz = v.tzinfo
        cdef int fold = v.fold
        self.w_array(7 if tz is None and not fold else 9 if fold else 8)
        self.w_int(v.year)
        self.w_int(v.month)
        self.w_int(v.day)
        self.w_int(v.hour)
        self.w_int(v.minute)
        self.w_int(v.second)
        self.w_int(v.microsecond)
        if tz is not None or fold:
            self.w_tz(tz, depth)
            if fold:
                self.w_byte(1)
        return self.end_ext(start, EXT_DATETIME)

    cdef int w_time(self, object v, int depth) except -1:
        cdef Py_ssize_t start = self.begin_ext()
        tz = v.tzinfo
        cdef int fold = v.fold
        self.w_array(4 if tz is None and not fold else 6 if fold else 5)
        self.w_int(v.hour)
        self.w_int(v.minute)
        self.w_int(v.second)
        self.w_int(v.microsecond)
        if tz is not None or fold:
            self.w_tz(tz, depth)
            if fold:
                self.w_byte(1)
        return self.end_ext(start, EXT_TIME)

    cdef int w_timezone(self, object v, int depth) except -1:
        off = v.utcoffset(None)
        name = v.tzname(None)
        cdef bint named = name != T_timezone(off).tzname(None)
        cdef Py_ssize_t start = self.begin_ext()
        self.w_array(2 if named else 1)
        self.w_int((off.days * 86400 + off.seconds) * 1000000 + off.microseconds)
        if named:
            self.value(name, depth)
        return self.end_ext(start, EXT_TIMEZONE)

    cdef int w_deque(self, object v, int depth) except -1:
        maxlen = v.maxlen
        cdef Py_ssize_t start = self.begin_ext()
        self.w_array(1 if maxlen is None else 2)
        self.w_list(list(v), depth)
        if maxlen is not None:
            self.w_int(maxlen)
        return self.end_ext(start, EXT_DEQUE)

    cdef int w_object(self, object v, type t, int depth) except -1:
        cdef Core core = self.core
        info = core.store_cache.get(t)
        if info is None:
            info = _INFO.get(t)
            if info is None:
                info = info_for(t)
            problem = core.resolver.check_store(info)
            if problem is not None:
                raise self.fail(problem[0], problem[1], depth - 1)
            core.store_cache[t] = info
        cdef int kind = info.kind
        cdef Py_ssize_t start = self.begin_ext()
        if kind == EXT_PYDANTIC:
            self.w_pydantic(v, info, depth)
        elif kind == EXT_ENUM:
            self.w_array(2)
            self.w_str(info.name)
            self.seg_kind[depth] = 1
            self.seg_obj[depth] = <PyObject*>S_VALUE
            self.value(v._value_, depth)
        elif kind == EXT_DATACLASS or kind == EXT_STRUCT:
            self.w_array(2)
            self.w_str(info.name)
            self.w_pairs(_attr_pairs(v, info.fields), depth, 1, False)
        elif kind == EXT_NAMEDTUPLE:
            self.w_namedtuple(v, info, depth)
        elif kind == EXT_EXCEPTION:
            self.w_exception(v, info, depth)
        elif kind == EXT_NDARRAY:
            self.n = start
            try:
                parts = _F.ndarray_parts(v)
            except EncodeFailure as f:
                raise self.fail(f.problem, f.hint, depth - 1)
            start = self.begin_ext()
            self.w_array(3)
            self.w_str(parts[0])
            shape = parts[1]
            if shape is None:
                self.w_byte(0xC0)
            else:
                self.w_array(len(shape))
                for n in shape:
                    self.w_int(n)
            self.w_bin(PyBytes_AS_STRING(<PyObject*>parts[2]), len(parts[2]))
        else:
            pairs = _attr_pairs(v, info.fields)
            if info.flag:
                pairs.extend(v.__dict__.items())
            self.w_array(2)
            self.w_str(info.name)
            self.w_pairs(pairs, depth, 1, False)
        return self.end_ext(start, kind)

    cdef int w_namedtuple(self, object v, object info, int depth) except -1:
        cdef tuple fields = info.fields
        cdef Py_ssize_t i, size = min(PyTuple_GET_SIZE(v), len(fields))
        self.w_array(2)
        self.w_str(info.name)
        self.w_array(size)
        self.seg_kind[depth] = 1
        for i in range(size):
            self.seg_obj[depth] = PyTuple_GET_ITEM(fields, i)
            self.value(<object>PyTuple_GET_ITEM(v, i), depth)
        return 0

    cdef int w_pydantic(self, object v, object info, int depth) except -1:
        cdef dict fields = v.__dict__
        fields_set = getattr(v, S_FIELDS_SET)
        cdef Py_ssize_t pos = 0, i = 0, found = 0, size = PyDict_GET_SIZE(fields)
        cdef PyObject* kp
        cdef PyObject* xp
        cdef uint64_t mask = 0
        big = None
        while PyDict_Next(fields, &pos, &kp, &xp):
            if PySet_Contains(fields_set, <object>kp):
                if i < 63:
                    mask |= (<uint64_t>1) << i
                else:
                    if big is None:
                        big = mask
                    big |= 1 << <object>i  # a Python int: more than 63 fields
                found += 1
            i += 1
        extra = getattr(v, S_EXTRA, None)
        private = getattr(v, S_PRIVATE, None)
        self.w_array(3 if extra is None and private is None else 4 if private is None else 5)
        self.w_str(info.name)
        self.w_dict_attrs(fields, depth)
        if found == len(fields_set):
            if big is None:
                self.w_int(mask)
            else:
                self.value(big | mask, depth)
        else:
            self.w_list(sorted(fields_set), depth)
        if extra is not None or private is not None:
            if extra is None:
                self.w_byte(0xC0)
            else:
                self.w_dict_attrs(extra, depth)
        if private is not None:
            self.w_dict_attrs(private, depth)
        return 0

    cdef int w_dict_attrs(self, dict v, int depth) except -1:
        """A dict whose keys are attribute names: as w_dict, with attribute path segments."""
        cdef Py_ssize_t pos = 0, count = 0, size = PyDict_GET_SIZE(v)
        cdef PyObject* kp
        cdef PyObject* xp
        self.w_map(size)
        while PyDict_Next(v, &pos, &kp, &xp):
            k = <object>kp
            x = <object>xp
            if type(k) is str:
                self.w_str(k)
            else:
                self.seg_kind[depth] = 3
                self.value(k, depth)
            self.seg_kind[depth] = 1
            self.seg_obj[depth] = kp
            self.value(x, depth)
            count += 1
        if count != size:
            raise self.fail(
                "a mapping changed size while it was being encoded", None, depth - 1
            )
        return 0

    cdef int w_exception(self, object v, object info, int depth) except -1:
        # Arguments and attributes that cannot be encoded are stored as their repr: an
        # exception is a diagnostic, and storing it must not fail the write that carries it.
        cdef tuple args = _F.exception_args(v)
        cdef Py_ssize_t i, mark
        attrs = getattr(v, "__dict__", None)
        self.w_array(3 if attrs else 2)
        self.w_str(info.name)
        self.w_array(PyTuple_GET_SIZE(args))
        for i in range(PyTuple_GET_SIZE(args)):
            a = <object>PyTuple_GET_ITEM(args, i)
            mark = self.n
            try:
                self.value(a, depth)
            except EncodeFailure:
                self.n = mark
                self.value(safe_repr(a), depth)
        if attrs:
            self.w_pairs(list(attrs.items()), depth, 1, True)
        return 0

    cdef object finish(self, object threshold):
        """The stored bytes: header, then the body (compressed when that pays)."""
        cdef Py_ssize_t body = self.n - HEADER_SIZE
        cdef char* p
        if threshold is not None and body > threshold:
            if body > CHUNK_SIZE:
                # Several threads compress its chunks at once.
                if _LZ4_DIRECT and c_lz4_compress != NULL and body <= <Py_ssize_t>0xFFFFFFFF:
                    stored = pack_chunks_native(self.buf + HEADER_SIZE, body)
                    if stored is not None:
                        return stored
                else:
                    packed = pack_chunks(PyMemoryView_FromMemory(self.buf + HEADER_SIZE, body,
                                                                 PyBUF_READ))
                    if len(packed) < body:
                        return _F.header(FLAG_LZ4, packed, CHUNKED_VERSION) + packed
            else:
                packed = lz4_pack(self.buf + HEADER_SIZE, body)
                if len(packed) < body:
                    head = _F.header(FLAG_LZ4, packed)
                    return head + packed
        cdef uint32_t crc = checksum(self.buf + HEADER_SIZE, self.n - HEADER_SIZE)
        p = self.buf
        p[0] = <char>FORMAT_VERSION
        p[1] = 0
        put_u32(p + 2, crc)
        _PyBytes_Resize(&self.out, self.n)
        result = <object>self.out
        Py_DECREF(result)
        self.out = NULL
        return result


cdef list _attr_pairs(object v, tuple names):
    cdef list pairs = []
    for name in names:
        x = getattr(v, name, _MISSING)
        if x is not _MISSING:
            pairs.append((name, x))
    return pairs


@cython.final
cdef class _Info:
    """What decoding needs of a registry TypeInfo, as C fields."""

    cdef object cls
    cdef int kind
    cdef tuple fields
    cdef object field_set
    cdef bint flag
    cdef object info  # the registry's TypeInfo

    def __cinit__(self, info):
        self.info = info
        self.cls = info.cls
        self.kind = info.kind
        self.fields = info.fields
        self.field_set = info.field_set
        self.flag = info.flag


# -- the twin of _py.Core ----------------------------------------------------------------------


@cython.final
cdef class Core:
    """Encodes and decodes with one resolver (allowlist) and compression threshold.

    Parameters
    ----------
    resolver:
        Which classes may be stored and loaded.
    compress_threshold:
        Bodies longer than this many bytes are lz4-compressed; None never compresses.
    """

    cdef readonly object resolver
    cdef readonly object compress_threshold
    cdef PyObject* keys[KEY_SLOTS]  # owned references (see key_str)
    cdef dict store_cache  # type -> TypeInfo of classes allowed to be stored
    cdef dict load_cache  # stored name -> TypeInfo
    cdef object gen

    def __init__(self, resolver, compress_threshold):
        self.resolver = resolver
        self.compress_threshold = compress_threshold
        self.store_cache = {}
        self.load_cache = {}
        self.gen = None

    cdef int fresh(self) except -1:
        gen = _reg.generation
        if gen is not self.gen:
            self.store_cache = {}
            self.load_cache = {}
            self.gen = gen
        return 0

    def encode(self, value):
        """``value`` as stored bytes. Raises ``_format.EncodeFailure``."""
        self.fresh()
        cdef _Encoder enc = _Encoder(self)
        enc.value(value, 0)
        return enc.finish(self.compress_threshold)

    # -- decoding ------------------------------------------------------------------------------

    def decode(self, data):
        """The value stored in ``data``. Raises ``_format.BadData`` or ``Unregistered``."""
        self.fresh()
        cdef const unsigned char* p
        cdef Py_ssize_t n
        if type(data) is not bytes:
            mv = memoryview(data)
            if mv.ndim != 1 or mv.itemsize != 1:
                mv = mv.cast("B")
            data = bytes(mv)
        p = <const unsigned char*>PyBytes_AS_STRING(<PyObject*>data)
        n = len(<bytes>data)
        if n == 0:
            raise BadData("no data (0 bytes)")
        cdef int version = p[0]
        if version not in KNOWN_VERSIONS:
            raise UnknownVersion(version)
        if n < HEADER_SIZE:
            raise BadData(f"truncated: {n} bytes, shorter than the {HEADER_SIZE}-byte header")
        cdef int flags = p[1]
        if flags & ~KNOWN_FLAGS:
            raise BadData(f"unknown flags 0x{flags:02x}")
        cdef uint32_t stored = get_u32(<const char*>p + 2)
        cdef uint32_t actual = checksum(<const char*>p + HEADER_SIZE, n - HEADER_SIZE)
        if actual != stored:
            raise BadData(
                f"checksum mismatch (stored {stored:08x}, computed {actual:08x}): the data is "
                f"corrupt"
            )
        cdef uint32_t size
        cdef _Reader reader
        if version == CHUNKED_VERSION:
            if _LZ4_DIRECT and c_lz4_decompress != NULL:
                body = unchunk_native(flags, <const char*>p + HEADER_SIZE, n - HEADER_SIZE)
            else:
                body = unchunked(flags, PyMemoryView_FromMemory(<char*>p + HEADER_SIZE,
                                                                n - HEADER_SIZE, PyBUF_READ))
            reader = _Reader(self, body, 0, len(<bytes>body))
        elif flags & FLAG_LZ4:
            if n - HEADER_SIZE < 4:
                raise BadData("truncated compressed payload")
            size = get_u32(<const char*>p + 6)
            if size > MAX_RATIO * (n - HEADER_SIZE):
                raise BadData(f"corrupt compressed payload (claims {size} bytes)")
            try:
                body = lz4_unpack(<const char*>p + HEADER_SIZE, n - HEADER_SIZE, size)
            except LZ4BlockError:
                raise BadData("corrupt compressed payload") from None
            reader = _Reader(self, body, 0, len(<bytes>body))
        else:
            reader = _Reader(self, data, HEADER_SIZE, n)
        value = reader.read()
        if reader.pos != reader.end:
            raise BadData(
                f"corrupt payload: trailing data (byte {reader.pos - reader.base})"
            )
        return value

    cdef object key_str(self, const char* s, Py_ssize_t n):
        """A str for UTF-8 ``s``: map keys and class names repeat, so short ASCII ones are
        cached (one slot per hash) and reused, which also reuses their cached hash."""
        if n > KEY_MAX:
            return PyUnicode_DecodeUTF8(s, n, NULL)
        cdef Py_ssize_t h = key_slot(s, n)
        cdef PyObject* slot = self.keys[h]
        if slot != NULL and PyUnicode_GET_LENGTH(<object>slot) == n and memcmp(
            PyUnicode_DATA(<object>slot), s, n
        ) == 0:
            return <object>slot
        x = PyUnicode_DecodeUTF8(s, n, NULL)
        if PyUnicode_IS_COMPACT_ASCII(x):
            # Read the slot again: making ``x`` may have run a collection, and with it code
            # in another thread that replaced the slot.
            slot = self.keys[h]
            Py_INCREF(x)
            self.keys[h] = <PyObject*>x
            Py_XDECREF(slot)
        return x

    cdef int seed_keys(self, tuple names) except -1:
        """Put a class's field names in the key cache, so stored keys decode to the very
        objects the class uses (see _same_keys)."""
        cdef Py_ssize_t h
        cdef PyObject* slot
        for name in names:
            if type(name) is str and PyUnicode_IS_COMPACT_ASCII(name):
                n = PyUnicode_GET_LENGTH(name)
                if n <= KEY_MAX:
                    h = key_slot(<const char*>PyUnicode_DATA(name), n)
                    slot = self.keys[h]
                    Py_INCREF(name)
                    self.keys[h] = <PyObject*>name
                    Py_XDECREF(slot)
        return 0

    def __dealloc__(self):
        cdef int i
        for i in range(KEY_SLOTS):
            Py_XDECREF(self.keys[i])
            self.keys[i] = NULL

    cdef _Info _typed(self, object name, int code):
        """The class stored as ``name`` (None only for exceptions that may not load)."""
        cdef _Info info = None
        if type(name) is str:
            info = self.load_cache.get(name)
        if info is None or info.kind != code:
            found = self.resolver.resolve(code, name)
            if found is None:
                return None
            info = _Info(found)
            self.load_cache[name] = info
            self.seed_keys(info.fields)
        return info

    cdef object _pydantic(self, object name, object fields, object spec, object extra,
                          object private):
        cdef _Info info = self._typed(name, EXT_PYDANTIC)
        if type(fields) is not dict:
            raise BadData("malformed pydantic model")
        cdef set fields_set
        cdef Py_ssize_t pos = 0, i = 0
        cdef PyObject* kp
        cdef PyObject* xp
        cdef long long bits
        cdef int overflow = 0
        cdef bint same = PyDict_GET_SIZE(fields) == PyTuple_GET_SIZE(info.fields)
        if type(spec) is int:
            fields_set = set()
            bits = PyLong_AsLongLongAndOverflow(spec, &overflow)
            if overflow == 0 and bits >= 0:
                # One pass: the fields set from the bit mask, and whether the stored keys are
                # the class's field name objects in order (see seed_keys).
                while PyDict_Next(fields, &pos, &kp, &xp):
                    if i < 63 and (bits >> i) & 1:
                        PySet_Add(fields_set, <object>kp)
                    if same and kp != PyTuple_GET_ITEM(info.fields, i):
                        same = False
                    i += 1
            else:
                same = False
                for k in fields:
                    if spec >> i & 1:
                        fields_set.add(k)
                    i += 1
        elif type(spec) is list:
            fields_set = set(spec)
            same = False
        else:
            raise BadData("malformed pydantic model")
        if (extra is not None and type(extra) is not dict) or (
            private is not None and type(private) is not dict
        ):
            raise BadData("malformed pydantic model")
        if not same:
            if _same_keys(<dict>fields, info.fields, info.field_set):
                # The keys are right but not the class's own objects: the cache lost them.
                self.seed_keys(info.fields)
            else:
                fields = _F.repair(info.info, fields)
        # Trusted types load without validation, as model_construct() would, but restoring
        # the stored fields set, extra and private attributes as they were.
        obj = new_instance(info.cls)
        PyObject_GenericSetAttr(obj, S_DICT, fields)
        PyObject_GenericSetAttr(obj, S_FIELDS_SET, fields_set)
        if not info.flag:  # RootModel keeps neither (as in model_construct)
            PyObject_GenericSetAttr(obj, S_EXTRA, extra)
            PyObject_GenericSetAttr(obj, S_PRIVATE, private)
        return obj

    cdef object _pydantic_list(self, list p):
        cdef Py_ssize_t n = len(p)
        return self._pydantic(p[0], p[1], p[2], p[3] if n > 3 else None,
                              p[4] if n > 4 else None)

    cdef object _dataclass(self, list p):
        cdef _Info info = self._typed(p[0], EXT_DATACLASS)
        fields = p[1]
        if type(fields) is not dict:
            raise BadData("malformed dataclass")
        obj = object_new(info.cls)
        known = info.field_set
        cdef Py_ssize_t pos = 0, count = 0
        cdef PyObject* kp
        cdef PyObject* xp
        while PyDict_Next(fields, &pos, &kp, &xp):
            k = <object>kp
            if k in known:
                PyObject_GenericSetAttr(obj, k, <object>xp)
                count += 1
        if count != len(known):
            _F.fill_defaults(obj, info.info, fields)
        return obj

    cdef object _object(self, list p):
        cdef _Info info = self._typed(p[0], EXT_OBJECT)
        attrs = p[1]
        if type(attrs) is not dict:
            raise BadData("malformed object")
        obj = object_new(info.cls)
        for k, x in (<dict>attrs).items():
            if type(k) is not str or (k.startswith("__") and k.endswith("__")):
                raise BadData(f"malformed object: attribute {_F._key_repr(k)}")
            PyObject_GenericSetAttr(obj, k, x)
        return obj

    cdef object _exception(self, list p):
        args = p[1]
        attrs = p[2] if len(p) > 2 else None
        if type(args) is not list or (attrs is not None and type(attrs) is not dict):
            raise BadData("malformed exception")
        cdef _Info info = self._typed(p[0], EXT_EXCEPTION)
        if info is None:
            return StoredException(_F.display_name(p[0]), tuple(args), attrs)
        if attrs:
            for k in attrs:
                if type(k) is not str or (
                    k.startswith("__") and k.endswith("__") and k != "__notes__"
                ):
                    raise BadData(f"malformed exception: attribute {_F._key_repr(k)}")
        base = info.info.base
        # Built through the nearest built-in base class, so no __new__ or __init__ of the
        # stored class runs. One that cannot be built that way comes back as StoredException.
        try:
            exc = base.__new__(info.cls, *args)
        except Exception:
            return StoredException(_F.display_name(p[0]), tuple(args), attrs)
        try:
            base.__init__(exc, *args)
        except Exception:
            exc.args = tuple(args)
        if attrs:
            for k, x in (<dict>attrs).items():
                PyObject_GenericSetAttr(exc, k, x)
        return exc


cdef inline Py_ssize_t key_slot(const char* s, Py_ssize_t n) noexcept:
    cdef uint64_t h, a, b
    cdef Py_ssize_t i
    if n >= 8:
        memcpy(&a, s, 8)
        memcpy(&b, s + n - 8, 8)
        h = (a * <uint64_t>0x9E3779B97F4A7C15ULL) ^ (b * <uint64_t>0xC2B2AE3D27D4EB4FULL) ^ <uint64_t>n
    else:
        h = <uint64_t>n
        for i in range(n):
            h = (h << 8) | <uint8_t>s[i]
    return <Py_ssize_t>((h * <uint64_t>0x9E3779B97F4A7C15ULL) >> (64 - KEY_BITS))


cdef inline uint64_t get16(const unsigned char* p) noexcept:
    return (<uint64_t>p[0] << 8) | p[1]


cdef inline uint64_t get32(const unsigned char* p) noexcept:
    return (<uint64_t>p[0] << 24) | (<uint64_t>p[1] << 16) | (<uint64_t>p[2] << 8) | p[3]


cdef inline uint64_t get64(const unsigned char* p) noexcept:
    return (get32(p) << 32) | get32(p + 4)


@cython.final
cdef class _Reader:
    """One decode call: MessagePack to Python objects, as msgspec would decode it, with the
    extension values rebuilt inline."""

    cdef object owner  # keeps ``buf`` alive
    cdef const unsigned char* buf
    cdef Py_ssize_t pos
    cdef Py_ssize_t end
    cdef Py_ssize_t base
    cdef int depth
    cdef Core core

    def __cinit__(self, Core core, bytes owner, Py_ssize_t start, Py_ssize_t end):
        self.core = core
        self.owner = owner
        self.buf = <const unsigned char*>PyBytes_AS_STRING(<PyObject*>owner)
        self.pos = start
        self.base = start
        self.end = end
        self.depth = 0

    cdef inline const unsigned char* need(self, Py_ssize_t k) except NULL:
        if k > self.end - self.pos:
            raise BadData("corrupt payload: truncated")
        cdef const unsigned char* p = self.buf + self.pos
        self.pos += k
        return p

    cdef int enter(self) except -1:
        self.depth += 1
        if self.depth > MAX_NEST:
            raise BadData("corrupt payload: nested too deeply")
        return 0

    cdef object read(self):
        cdef const unsigned char* p = self.need(1)
        cdef unsigned char b = p[0]
        cdef uint64_t u
        cdef uint32_t f32
        cdef float f
        cdef double d
        if b < 0x80:
            return <long>b
        if b >= 0xE0:
            return <long>(<signed char>b)
        if b < 0x90:
            return self.read_map(b & 0x0F)
        if b < 0xA0:
            return self.read_array(b & 0x0F, False)
        if b < 0xC0:
            return self.read_str(b & 0x1F)
        if b == 0xC0:
            return None
        if b == 0xC2:
            return False
        if b == 0xC3:
            return True
        if b == 0xCB:
            u = get64(self.need(8))
            memcpy(&d, &u, 8)
            return d
        if b == 0xD9:
            return self.read_str(self.need(1)[0])
        if b == 0xDA:
            return self.read_str(get16(self.need(2)))
        if b == 0xDB:
            return self.read_str(get32(self.need(4)))
        if b == 0xCC:
            return <long>self.need(1)[0]
        if b == 0xCD:
            return <long>get16(self.need(2))
        if b == 0xCE:
            return <long long>get32(self.need(4))
        if b == 0xCF:
            return <unsigned long long>get64(self.need(8))
        if b == 0xD0:
            return <long>(<signed char>self.need(1)[0])
        if b == 0xD1:
            return <long>(<short>get16(self.need(2)))
        if b == 0xD2:
            return <long long>(<int>get32(self.need(4)))
        if b == 0xD3:
            return <long long>get64(self.need(8))
        if b == 0xCA:
            f32 = <uint32_t>get32(self.need(4))
            memcpy(&f, &f32, 4)
            return <double>f
        if b == 0xC4:
            return self.read_bin(self.need(1)[0])
        if b == 0xC5:
            return self.read_bin(get16(self.need(2)))
        if b == 0xC6:
            return self.read_bin(get32(self.need(4)))
        if b == 0xDC:
            return self.read_array(get16(self.need(2)), False)
        if b == 0xDD:
            return self.read_array(get32(self.need(4)), False)
        if b == 0xDE:
            return self.read_map(get16(self.need(2)))
        if b == 0xDF:
            return self.read_map(get32(self.need(4)))
        if b == 0xD4:
            return self.read_ext(1)
        if b == 0xD5:
            return self.read_ext(2)
        if b == 0xD6:
            return self.read_ext(4)
        if b == 0xD7:
            return self.read_ext(8)
        if b == 0xD8:
            return self.read_ext(16)
        if b == 0xC7:
            return self.read_ext(self.need(1)[0])
        if b == 0xC8:
            return self.read_ext(get16(self.need(2)))
        if b == 0xC9:
            return self.read_ext(get32(self.need(4)))
        raise BadData(
            f"corrupt payload: invalid byte 0x{b:02x} (byte {self.pos - 1 - self.base})"
        )

    cdef object read_str(self, Py_ssize_t n):
        cdef const unsigned char* p = self.need(n)
        return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)

    cdef object read_key_str(self, Py_ssize_t n):
        cdef const unsigned char* p = self.need(n)
        return self.core.key_str(<const char*>p, n)

    cdef object read_bin(self, Py_ssize_t n):
        cdef const unsigned char* p = self.need(n)
        return PyBytes_FromStringAndSize_obj(<const char*>p, n)

    cdef object read_array(self, Py_ssize_t n, bint as_key):
        cdef Py_ssize_t i
        if n > self.end - self.pos:
            # More items than bytes left: the payload is truncated, which the bytes running out
            # will say. Until then read the items one by one, as msgspec (the Python twin) does,
            # so that an error in one of them comes first in both twins.
            self.enter()
            for i in range(n):
                if as_key:
                    self.read_key()
                else:
                    self.read()
            raise BadData("corrupt payload: truncated")
        self.enter()
        if as_key:
            # msgspec decodes arrays used as map keys as tuples (hashable).
            out = PyTuple_New(n)
            for i in range(n):
                x = self.read_key()
                Py_INCREF(x)
                PyTuple_SET_ITEM(out, i, x)
        else:
            out = PyList_New(n)
            for i in range(n):
                x = self.read()
                Py_INCREF(x)
                PyList_SET_ITEM(out, i, x)
        self.depth -= 1
        return out

    cdef object read_key(self):
        """A map key (or a class name): strs through the key cache, arrays as tuples."""
        cdef unsigned char b = self.buf[self.pos] if self.pos < self.end else 0
        if 0xA0 <= b <= 0xBF:
            self.pos += 1
            return self.read_key_str(b & 0x1F)
        if b == 0xD9:
            self.pos += 1
            return self.read_key_str(self.need(1)[0])
        if 0x90 <= b <= 0x9F:
            self.pos += 1
            return self.read_array(b & 0x0F, True)
        if b == 0xDC:
            self.pos += 1
            return self.read_array(get16(self.need(2)), True)
        if b == 0xDD:
            self.pos += 1
            return self.read_array(get32(self.need(4)), True)
        return self.read()

    cdef object read_map(self, Py_ssize_t n):
        # No check of n against the bytes left: the dict grows entry by entry, and a map claiming
        # more entries than there are bytes ends when they run out, after any error in the
        # entries before (as in msgspec, the Python twin).
        self.enter()
        cdef dict out = {}
        cdef Py_ssize_t i
        for i in range(n):
            k = self.read_key()
            x = self.read()
            if type(k) is str:
                out[k] = x
            else:
                try:
                    out[k] = x
                except TypeError:
                    raise BadData(
                        f"corrupt payload: map keys must be hashable (byte "
                        f"{self.pos - self.base})"
                    ) from None
        self.depth -= 1
        return out

    cdef object read_ext(self, Py_ssize_t size):
        cdef int code = <signed char>self.need(1)[0]
        cdef Py_ssize_t start = self.pos
        self.need(size)
        if code == -1:
            # The MessagePack timestamp: msgspec decodes it (to an aware datetime), so the
            # pure-Python codec returns one; do the same, through msgspec.
            raw = PyBytes_FromStringAndSize_obj(<const char*>self.buf + start, size)
            return _msgspec.msgpack.decode(_msgspec.msgpack.encode(Ext(-1, raw)))
        if code < EXT_TUPLE or code > EXT_PATTERN:
            raise BadData(f"unknown extension type {code}")
        try:
            return self.build(code, start, size)
        except (BadData, Unregistered):
            raise
        except Exception as exc:
            raise BadData(
                f"malformed {EXT_NAMES[code]}: {type(exc).__name__}: {exc}"
            ) from None

    cdef list sub(self, Py_ssize_t start, Py_ssize_t size, int code, Py_ssize_t lo,
                  Py_ssize_t hi):
        """The MessagePack array an extension's payload holds, with lo to hi items."""
        cdef Py_ssize_t pos = self.pos, end = self.end, base = self.base
        self.pos = start
        self.end = start + size
        self.base = start
        x = self.read()
        if self.pos != self.end:
            raise BadData(f"malformed {EXT_NAMES[code]}")
        self.pos = pos
        self.end = end
        self.base = base
        if type(x) is not list or not lo <= PyList_GET_SIZE(x) <= hi:
            raise BadData(f"malformed {EXT_NAMES[code]}")
        return <list>x

    cdef object pydantic(self, Py_ssize_t start, Py_ssize_t size):
        """A pydantic model, read straight from its payload when that is well formed."""
        cdef const unsigned char* p = self.buf + start
        cdef Py_ssize_t n
        if size < 1 or not (0x93 <= p[0] <= 0x95):
            return self.core._pydantic_list(self.sub(start, size, EXT_PYDANTIC, 3, 5))
        n = p[0] & 0x0F
        cdef Py_ssize_t pos = self.pos, end = self.end, base = self.base
        self.pos = start + 1
        self.end = start + size
        self.base = start
        self.enter()
        name = self.read_key()
        fields = self.read()
        spec = self.read()
        extra = self.read() if n > 3 else None
        private = self.read() if n > 4 else None
        self.depth -= 1
        if self.pos != self.end:
            raise BadData(f"malformed {EXT_NAMES[EXT_PYDANTIC]}")
        self.pos = pos
        self.end = end
        self.base = base
        return self.core._pydantic(name, fields, spec, extra, private)

    cdef object raw(self, Py_ssize_t start, Py_ssize_t size):
        return PyBytes_FromStringAndSize_obj(<const char*>self.buf + start, size)

    cdef object build(self, int code, Py_ssize_t start, Py_ssize_t size):
        cdef list p
        cdef Core core = self.core
        if code == EXT_TUPLE:
            return PyList_AsTuple(self.sub(start, size, code, 0, MAXSIZE))
        if code == EXT_PYDANTIC:
            return self.pydantic(start, size)
        if code == EXT_SET:
            return set(self.sub(start, size, code, 0, MAXSIZE))
        if code == EXT_FROZENSET:
            return frozenset(self.sub(start, size, code, 0, MAXSIZE))
        if code == EXT_BYTEARRAY:
            return bytearray(self.raw(start, size))
        if code == EXT_BIGINT:
            return int.from_bytes(self.raw(start, size), "big", signed=True)
        if code == EXT_STR:
            return PyUnicode_DecodeUTF8(<const char*>self.buf + start, size, "surrogatepass")
        if code == EXT_DATETIME:
            p = self.sub(start, size, code, 7, 9)
            return T_datetime(p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                              p[7] if len(p) > 7 else None, fold=p[8] if len(p) > 8 else 0)
        if code == EXT_DATE:
            p = self.sub(start, size, code, 3, 3)
            return T_date(p[0], p[1], p[2])
        if code == EXT_TIME:
            p = self.sub(start, size, code, 4, 6)
            return T_time(p[0], p[1], p[2], p[3], p[4] if len(p) > 4 else None,
                          fold=p[5] if len(p) > 5 else 0)
        if code == EXT_TIMEDELTA:
            p = self.sub(start, size, code, 3, 3)
            return T_timedelta(p[0], p[1], p[2])
        if code == EXT_TIMEZONE:
            p = self.sub(start, size, code, 1, 2)
            if type(p[0]) is not int:
                raise BadData("malformed timezone")
            offset = T_timedelta(microseconds=p[0])
            return T_timezone(offset) if len(p) == 1 else T_timezone(offset, p[1])
        if code == EXT_ZONEINFO:
            return T_zoneinfo(self.raw(start, size).decode("utf-8", "surrogatepass"))
        if code == EXT_UUID:
            return T_uuid(bytes=self.raw(start, size))
        if code == EXT_DECIMAL:
            return T_decimal(self.raw(start, size).decode("ascii"))
        if code == EXT_PATH:
            p = self.sub(start, size, code, 2, 2)
            kind = p[0]
            if type(kind) is not int or not 0 <= kind < len(PATH_TYPES) or type(p[1]) is not str:
                raise BadData("malformed path")
            return PATH_TYPES[kind](p[1])
        if code == EXT_DEQUE:
            p = self.sub(start, size, code, 1, 2)
            if type(p[0]) is not list:
                raise BadData("malformed deque")
            return T_deque(p[0], p[1] if len(p) > 1 else None)
        if code == EXT_ENUM:
            p = self.sub(start, size, code, 2, 2)
            return core._typed(p[0], code).cls(p[1])
        if code == EXT_DATACLASS:
            return core._dataclass(self.sub(start, size, code, 2, 2))
        if code == EXT_NAMEDTUPLE:
            p = self.sub(start, size, code, 2, 2)
            cls = core._typed(p[0], code).cls
            if type(p[1]) is not list:
                raise BadData("malformed NamedTuple")
            return cls(*p[1])
        if code == EXT_STRUCT:
            p = self.sub(start, size, code, 2, 2)
            info = core._typed(p[0], code)
            fields = p[1]
            if type(fields) is not dict:
                raise BadData("malformed msgspec Struct")
            known = info.field_set
            return info.cls(**{k: x for k, x in (<dict>fields).items() if k in known})
        if code == EXT_OBJECT:
            return core._object(self.sub(start, size, code, 2, 2))
        if code == EXT_EXCEPTION:
            return core._exception(self.sub(start, size, code, 2, 3))
        if code == EXT_IPADDRESS:
            return _F.build_ipaddress(self.sub(start, size, code, 2, 2))
        if code == EXT_PATTERN:
            return _F.build_pattern(self.sub(start, size, code, 2, 2))
        p = self.sub(start, size, code, 3, 3)
        return _F.build_ndarray(p)


cdef bint _same_keys(dict d, tuple order, object names) except -1:
    """Whether ``d`` has exactly the keys ``names``. Stored keys usually are the class's own
    field name objects, in order (see Core.seed_keys): checked by identity first."""
    cdef Py_ssize_t size = PyDict_GET_SIZE(d)
    if size != PyTuple_GET_SIZE(order):
        return False
    cdef Py_ssize_t pos = 0, i = 0
    cdef PyObject* kp
    cdef PyObject* xp
    while PyDict_Next(d, &pos, &kp, &xp):
        if kp != PyTuple_GET_ITEM(order, i):
            break
        i += 1
    if i == size:
        return True
    pos = 0
    while PyDict_Next(d, &pos, &kp, &xp):
        if not PySet_Contains(names, <object>kp):
            return False
    return True
