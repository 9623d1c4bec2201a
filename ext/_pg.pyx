"""PostgreSQL's binary array form, built in C: ``snapstate.backends._pg_native``.

The PostgreSQL backend binds one array per column when it writes a large batch (the batched
writer's merged commits, ``copy_thread``, an import). :func:`binary_array` here builds exactly the
bytes ``snapstate.backends._pg_direct``'s Python loop builds, and refuses exactly what it
refuses (it returns None and the batch goes through psycopg's cursor, which says what is wrong):
the backend uses this one when it is built, and the Python one under ``SNAPSTATE_IMPL=python``.

The form: a 20-byte header (dimensions 1, a flag saying whether any element is NULL, the element
type's OID, the length, the lower bound 1), then per element its length as a big-endian int32
(-1 for NULL) and its bytes.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong
from cpython.unicode cimport PyUnicode_AsUTF8String
from libc.stdint cimport int16_t, int32_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

cdef extern from "Python.h":
    # An ASCII string's characters are its UTF-8 bytes, stored in the object: no copy needed.
    bint PyUnicode_IS_COMPACT_ASCII(object)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)

__all__ = ["binary_array"]

cdef enum Kind:
    TEXT
    BYTEA
    INT2
    INT4
    FLOAT8

#: Each element type's OID (as in ``_pg_direct._ARRAY_OIDS``) and how its values are written.
cdef dict _ELEMENTS = {
    "text": (25, TEXT),
    "bytea": (17, BYTEA),
    "int2": (21, INT2),
    "int4": (23, INT4),
    "float8": (701, FLOAT8),
}


cdef inline void _put32(char* p, uint32_t v) noexcept:
    p[0] = <char>((v >> 24) & 0xFF)
    p[1] = <char>((v >> 16) & 0xFF)
    p[2] = <char>((v >> 8) & 0xFF)
    p[3] = <char>(v & 0xFF)


cdef inline void _put64(char* p, uint64_t v) noexcept:
    _put32(p, <uint32_t>(v >> 32))
    _put32(p + 4, <uint32_t>(v & 0xFFFFFFFF))


def binary_array(values, str element):
    """``values`` (a sequence) as a one-dimensional PostgreSQL array of ``element`` ("text",
    "bytea", "int2", "int4" or "float8") in binary form; None when a value is one the backend
    leaves to psycopg: not of the element's exact Python type (None is NULL), a string holding
    NUL or a lone surrogate, an integer out of the element's range. An unknown ``element``
    raises KeyError."""
    oid_and_kind = _ELEMENTS[element]  # KeyError, as the Python builder raises
    cdef uint32_t oid = oid_and_kind[0]
    cdef Kind kind = oid_and_kind[1]
    # A copy of our own: the second pass must see the elements the first one checked.
    cdef list items = list(values)
    cdef Py_ssize_t n = PyList_GET_SIZE(items)
    cdef Py_ssize_t i, size = 20
    cdef list data = None  # the elements' bytes (text, bytea), or an ASCII str itself
    cdef object v, b
    cdef int nulls = 0
    cdef long long number
    cdef Py_ssize_t length
    cdef const char* start
    if n > 0x7FFFFFFF:
        return None
    if kind == TEXT or kind == BYTEA:
        data = [None] * n
        for i in range(n):
            v = <object>PyList_GET_ITEM(items, i)
            if v is None:
                nulls = 1
                size += 4
                continue
            if kind == TEXT:
                if type(v) is not str:
                    return None
                if PyUnicode_IS_COMPACT_ASCII(v):
                    b = v
                    length = PyUnicode_GET_LENGTH(v)
                    start = <const char*>PyUnicode_DATA(v)
                else:
                    try:
                        b = PyUnicode_AsUTF8String(v)
                    except UnicodeEncodeError:
                        return None
                    length = PyBytes_GET_SIZE(b)
                    start = PyBytes_AS_STRING(b)
                if memchr(start, 0, <size_t>length) != NULL:
                    return None  # UTF-8 has a zero byte only for U+0000
            else:
                if type(v) is not bytes:
                    return None
                b = v
                length = PyBytes_GET_SIZE(b)
            if length > 0x7FFFFFFF:
                return None
            data[i] = b
            size += 4 + length
    else:
        for i in range(n):
            v = <object>PyList_GET_ITEM(items, i)
            if v is None:
                nulls = 1
                size += 4
            elif kind == FLOAT8:
                if type(v) is not float:
                    return None
                size += 12
            else:
                if type(v) is not int:
                    return None
                try:
                    number = PyLong_AsLongLong(v)
                except OverflowError:
                    return None
                if kind == INT2:
                    if number < -32768 or number > 32767:
                        return None
                    size += 6
                elif number < -2147483648 or number > 2147483647:
                    return None
                else:
                    size += 8

    out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(out)
    cdef double d
    cdef uint64_t bits
    _put32(p, 1)
    _put32(p + 4, <uint32_t>nulls)
    _put32(p + 8, oid)
    _put32(p + 12, <uint32_t>n)
    _put32(p + 16, 1)
    p += 20
    for i in range(n):
        v = <object>PyList_GET_ITEM(items, i)
        if v is None:
            _put32(p, 0xFFFFFFFF)
            p += 4
        elif kind == TEXT or kind == BYTEA:
            b = data[i]
            if type(b) is str:
                length = PyUnicode_GET_LENGTH(b)
                start = <const char*>PyUnicode_DATA(b)
            else:
                length = PyBytes_GET_SIZE(b)
                start = PyBytes_AS_STRING(b)
            _put32(p, <uint32_t>length)
            memcpy(p + 4, start, <size_t>length)
            p += 4 + length
        elif kind == FLOAT8:
            d = PyFloat_AS_DOUBLE(v)
            memcpy(&bits, &d, 8)
            _put32(p, 8)
            _put64(p + 4, bits)
            p += 12
        elif kind == INT2:
            _put32(p, 2)
            number = PyLong_AsLongLong(v)
            p[4] = <char>((<uint16_t><int16_t>number >> 8) & 0xFF)
            p[5] = <char>(<uint16_t><int16_t>number & 0xFF)
            p += 6
        else:
            _put32(p, 4)
            number = PyLong_AsLongLong(v)
            _put32(p + 4, <uint32_t><int32_t>number)
            p += 8
    return out
