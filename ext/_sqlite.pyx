"""A minimal SQLite connection for the SQLite backend's small writes: ``snapstate.backends._sqlite_native``.

Python's ``sqlite3`` lets go of the GIL around every statement it steps. A ``sync`` write is a
handful of short statements (begin, the tombstone check, two or three inserts, commit), and
while a graph runs, every one of those releases hands the GIL to another thread and waits to
get it back. This connection runs each statement holding the GIL instead. It never waits while
holding it: its busy timeout is zero, so when another connection holds the write lock,
:meth:`Connection.begin` says so at once and the backend writes through ``sqlite3`` instead
(whose busy handler sleeps without the GIL). The backend only sends it small batches and only
under ``synchronous`` ``off`` or ``normal``, where a commit in WAL mode writes to the WAL
without waiting for the disk.

It runs on the SQLite library of Python's ``sqlite3`` module, whose functions :func:`load` looks
up at run time: two copies of SQLite in one process would not see each other's POSIX locks on a
file (closing a file in one drops the other's locks), and nothing is needed to build this module
but Cython. Its files open through a VFS of its own over SQLite's default one, which writes a
commit's WAL frames with one system call (see "the WAL write buffer" below).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from posix.dlfcn cimport RTLD_NOW, dlclose, dlopen, dlsym
from posix.unistd cimport getpid

import os as _os
import sqlite3 as _sqlite3

__all__ = ["Connection", "WAL_BUFFER_VFS", "load", "sqlite_version", "wal_buffer_counts"]

cdef extern from "dlfcn.h":
    int RTLD_NOLOAD

# SQLite's C API, declared here and looked up at run time in the library Python's sqlite3 module
# runs on (see load()): no header or link to a library at build time, and by construction no
# second copy of SQLite. Result codes and flags are SQLite's stable ABI values.
cdef extern from *:
    """
    typedef struct sqlite3 sqlite3;
    typedef struct sqlite3_stmt sqlite3_stmt;
    """
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt

ctypedef long long sqlite3_int64
ctypedef unsigned long long sqlite3_uint64
ctypedef void (*sqlite3_destructor_type)(void*) noexcept nogil

cdef enum:
    SQLITE_OK = 0
    SQLITE_BUSY = 5
    SQLITE_LOCKED = 6
    SQLITE_CONSTRAINT = 19
    SQLITE_ROW = 100
    SQLITE_DONE = 101
    SQLITE_INTEGER = 1
    SQLITE_FLOAT = 2
    SQLITE_TEXT = 3
    SQLITE_BLOB = 4
    SQLITE_NULL = 5
    SQLITE_OPEN_READWRITE = 0x2
    SQLITE_PREPARE_PERSISTENT = 0x1
    SQLITE_UTF8 = 1

cdef sqlite3_destructor_type SQLITE_STATIC = <sqlite3_destructor_type>0
cdef sqlite3_destructor_type SQLITE_TRANSIENT = <sqlite3_destructor_type><Py_ssize_t>-1

ctypedef const char* (*f_libversion)() noexcept nogil
ctypedef int (*f_open_v2)(const char*, sqlite3**, int, const char*) noexcept nogil
ctypedef int (*f_db)(sqlite3*) noexcept nogil
ctypedef int (*f_db_int)(sqlite3*, int) noexcept nogil
ctypedef const char* (*f_errmsg)(sqlite3*) noexcept nogil
ctypedef int (*f_exec)(sqlite3*, const char*, void*, void*, char**) noexcept nogil
ctypedef int (*f_prepare_v3)(sqlite3*, const char*, int, unsigned int, sqlite3_stmt**,
                             const char**) noexcept nogil
ctypedef int (*f_stmt)(sqlite3_stmt*) noexcept nogil
ctypedef int (*f_stmt_int)(sqlite3_stmt*, int) noexcept nogil
ctypedef int (*f_bind_int64)(sqlite3_stmt*, int, sqlite3_int64) noexcept nogil
ctypedef int (*f_bind_double)(sqlite3_stmt*, int, double) noexcept nogil
ctypedef int (*f_bind_text64)(sqlite3_stmt*, int, const char*, sqlite3_uint64,
                              sqlite3_destructor_type, unsigned char) noexcept nogil
ctypedef int (*f_bind_blob64)(sqlite3_stmt*, int, const void*, sqlite3_uint64,
                              sqlite3_destructor_type) noexcept nogil
ctypedef sqlite3_int64 (*f_column_int64)(sqlite3_stmt*, int) noexcept nogil
ctypedef double (*f_column_double)(sqlite3_stmt*, int) noexcept nogil
ctypedef const void* (*f_column_ptr)(sqlite3_stmt*, int) noexcept nogil

cdef f_libversion sqlite3_libversion = NULL
cdef f_open_v2 sqlite3_open_v2 = NULL
cdef f_db sqlite3_close_v2 = NULL
cdef f_db_int sqlite3_extended_result_codes = NULL
cdef f_db sqlite3_extended_errcode = NULL
cdef f_errmsg sqlite3_errmsg = NULL
cdef f_exec sqlite3_exec = NULL
cdef f_db sqlite3_get_autocommit = NULL
cdef f_prepare_v3 sqlite3_prepare_v3 = NULL
cdef f_stmt sqlite3_finalize = NULL
cdef f_stmt sqlite3_reset = NULL
cdef f_stmt sqlite3_clear_bindings = NULL
cdef f_stmt sqlite3_step = NULL
cdef f_stmt sqlite3_bind_parameter_count = NULL
cdef f_stmt_int sqlite3_bind_null = NULL
cdef f_bind_int64 sqlite3_bind_int64 = NULL
cdef f_bind_double sqlite3_bind_double = NULL
cdef f_bind_text64 sqlite3_bind_text64 = NULL
cdef f_bind_blob64 sqlite3_bind_blob64 = NULL
cdef f_stmt sqlite3_column_count = NULL
cdef f_stmt_int sqlite3_column_type = NULL
cdef f_column_int64 sqlite3_column_int64 = NULL
cdef f_column_double sqlite3_column_double = NULL
cdef f_column_ptr sqlite3_column_text = NULL
cdef f_column_ptr sqlite3_column_blob = NULL
cdef f_stmt_int sqlite3_column_bytes = NULL


# -- the WAL write buffer ------------------------------------------------------------------------
#
# SQLite appends each WAL frame as two write() calls, its 24-byte header and then its page: a
# commit of 9 pages is 18 system calls. This connection opens its files through a VFS of its own
# that forwards every call to the default VFS, except that appends to a WAL file are gathered in
# memory and written with one call when the commit's last frame is complete, inside SQLite's own
# write of that frame: so its error is the commit's, and the commit is in the file before SQLite
# publishes it to other connections (it does that after its frame writes return). Everything
# else (the database file, the shared memory, reads, syncs, truncation, a WAL write that is not
# an append) writes what is gathered first, then goes through as it would.
#
# A WAL file is appended at the next frame's offset; SQLite writes below what it has written of
# the current file only to rewrite frames of the open transaction (a page written twice, the
# checksums after it) or, after a checkpoint, over an older generation (which starts by writing
# the WAL header at offset 0). Such writes go straight through, after what is gathered: nothing
# is written out of order, and a frame's rewritten header is never held back.

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>

    typedef long long ssw_i64;
    typedef struct ssw_file ssw_file;
    typedef struct ssw_io {
        int iVersion;
        int (*xClose)(ssw_file*);
        int (*xRead)(ssw_file*, void*, int, ssw_i64);
        int (*xWrite)(ssw_file*, const void*, int, ssw_i64);
        int (*xTruncate)(ssw_file*, ssw_i64);
        int (*xSync)(ssw_file*, int);
        int (*xFileSize)(ssw_file*, ssw_i64*);
        int (*xLock)(ssw_file*, int);
        int (*xUnlock)(ssw_file*, int);
        int (*xCheckReservedLock)(ssw_file*, int*);
        int (*xFileControl)(ssw_file*, int, void*);
        int (*xSectorSize)(ssw_file*);
        int (*xDeviceCharacteristics)(ssw_file*);
        int (*xShmMap)(ssw_file*, int, int, int, void volatile**);
        int (*xShmLock)(ssw_file*, int, int, int);
        void (*xShmBarrier)(ssw_file*);
        int (*xShmUnmap)(ssw_file*, int);
        int (*xFetch)(ssw_file*, ssw_i64, int, void**);
        int (*xUnfetch)(ssw_file*, ssw_i64, void*);
    } ssw_io;
    struct ssw_file { const ssw_io* pMethods; };

    typedef struct ssw_vfs ssw_vfs;
    typedef void (*ssw_syscall)(void);
    struct ssw_vfs {
        int iVersion;
        int szOsFile;
        int mxPathname;
        ssw_vfs* pNext;
        const char* zName;
        void* pAppData;
        int (*xOpen)(ssw_vfs*, const char*, ssw_file*, int, int*);
        int (*xDelete)(ssw_vfs*, const char*, int);
        int (*xAccess)(ssw_vfs*, const char*, int, int*);
        int (*xFullPathname)(ssw_vfs*, const char*, int, char*);
        void* (*xDlOpen)(ssw_vfs*, const char*);
        void (*xDlError)(ssw_vfs*, int, char*);
        void (*(*xDlSym)(ssw_vfs*, void*, const char*))(void);
        void (*xDlClose)(ssw_vfs*, void*);
        int (*xRandomness)(ssw_vfs*, int, char*);
        int (*xSleep)(ssw_vfs*, int);
        int (*xCurrentTime)(ssw_vfs*, double*);
        int (*xGetLastError)(ssw_vfs*, int, char*);
        int (*xCurrentTimeInt64)(ssw_vfs*, ssw_i64*);
        int (*xSetSystemCall)(ssw_vfs*, const char*, ssw_syscall);
        ssw_syscall (*xGetSystemCall)(ssw_vfs*, const char*);
        const char* (*xNextSystemCall)(ssw_vfs*, const char*);
    };

    #define SSW_OPEN_WAL 0x00080000
    #define SSW_FRAME_HEADER 24
    /* Gathered bytes are written once they would pass this, in calls of at most SSW_PIECE. */
    #define SSW_MAX (4 * 1024 * 1024)
    #define SSW_PIECE (64 * 1024)

    typedef struct {
        ssw_file base;
        ssw_io methods;      /* the file's own: its version follows the default VFS's file */
        ssw_file* real;      /* the default VFS's file, in the same allocation, after this */
        int wal;
        unsigned char* buf;  /* gathered appends: buf[0:len] belongs at offset off */
        int cap;
        int len;
        ssw_i64 off;
        ssw_i64 end;         /* the end of what this generation of the WAL file has been given */
        int commit_header;   /* the last gathered write was a commit frame's header */
        ssw_i64 header_end;  /* where that header ends (its page starts) */
    } ssw_wal;

    #define SSW_OFFSET ((int)((sizeof(ssw_wal) + 15) & ~(size_t)15))

    static ssw_vfs ssw_vfs_obj;
    static ssw_vfs* ssw_root = NULL;
    static unsigned long ssw_gathered = 0;
    static unsigned long ssw_flushes = 0;
    static unsigned long ssw_direct = 0;

    static int ssw_flush(ssw_wal* p) {
        int rc = 0;
        int done = 0;
        /* In pieces: the default VFS writes at most 128 KiB - 1 bytes of a call (it expects a
           page at a time), and a call of more reports a short write, as a full disk. */
        while (rc == 0 && done < p->len) {
            int n = p->len - done < SSW_PIECE ? p->len - done : SSW_PIECE;
            rc = p->real->pMethods->xWrite(p->real, p->buf + done, n, p->off + done);
            done += n;
            __atomic_fetch_add(&ssw_flushes, 1, __ATOMIC_RELAXED);
        }
        p->len = 0;
        p->commit_header = 0;
        return rc;
    }

    #define SSW_P ssw_wal* p = (ssw_wal*)f; ssw_file* r = p->real
    #define SSW_FLUSHED SSW_P; if (p->wal) { int frc = ssw_flush(p); if (frc) return frc; }

    static int ssw_close(ssw_file* f) {
        SSW_P;
        int frc = p->wal ? ssw_flush(p) : 0;
        int rc = r->pMethods->xClose(r);
        free(p->buf);
        p->buf = NULL;
        p->cap = 0;
        return frc ? frc : rc;
    }
    static int ssw_read(ssw_file* f, void* z, int n, ssw_i64 o) {
        SSW_FLUSHED;
        return r->pMethods->xRead(r, z, n, o);
    }
    /* A WAL write that is not gathered: what is gathered first, then this one. */
    static int ssw_through(ssw_wal* p, const void* z, int n, ssw_i64 o) {
        int rc = ssw_flush(p);
        if (rc) return rc;
        __atomic_fetch_add(&ssw_direct, 1, __ATOMIC_RELAXED);
        rc = p->real->pMethods->xWrite(p->real, z, n, o);
        if (rc == 0 && o + n > p->end) p->end = o + n;
        return rc;
    }
    static int ssw_write(ssw_file* f, const void* z, int n, ssw_i64 o) {
        SSW_P;
        int rc;
        if (!p->wal) return r->pMethods->xWrite(r, z, n, o);
        if (o == 0) p->end = 0;  /* the WAL header: a new generation of the file */
        if (p->len > 0 && (o != p->off + p->len || (ssw_i64)p->len + n > SSW_MAX)) {
            rc = ssw_flush(p);
            if (rc) return rc;
        }
        if (o < p->end || n > SSW_MAX) return ssw_through(p, z, n, o);  /* a rewrite, or too large */
        if (p->len + n > p->cap) {
            int cap = p->cap ? p->cap : 64 * 1024;
            unsigned char* grown;
            while (cap < p->len + n) cap *= 2;
            grown = (unsigned char*)realloc(p->buf, (size_t)cap);
            if (grown == NULL) return ssw_through(p, z, n, o);
            p->buf = grown;
            p->cap = cap;
        }
        if (p->len == 0) p->off = o;
        memcpy(p->buf + p->len, z, (size_t)n);
        p->len += n;
        p->end = o + n;
        __atomic_fetch_add(&ssw_gathered, 1, __ATOMIC_RELAXED);
        if (n == SSW_FRAME_HEADER) {
            /* A frame's header: bytes 4 to 7 hold the database's size after a commit, else 0. */
            const unsigned char* h = (const unsigned char*)z;
            p->commit_header = (h[4] | h[5] | h[6] | h[7]) != 0;
            p->header_end = o + n;
            return 0;
        }
        if (p->commit_header && o == p->header_end) return ssw_flush(p);  /* the commit's page */
        p->commit_header = 0;
        return 0;
    }
    static int ssw_truncate(ssw_file* f, ssw_i64 size) {
        SSW_FLUSHED;
        if (p->end > size) p->end = size;
        return r->pMethods->xTruncate(r, size);
    }
    static int ssw_sync(ssw_file* f, int flags) { SSW_FLUSHED; return r->pMethods->xSync(r, flags); }
    static int ssw_size(ssw_file* f, ssw_i64* out) { SSW_FLUSHED; return r->pMethods->xFileSize(r, out); }
    static int ssw_lock(ssw_file* f, int k) { SSW_FLUSHED; return r->pMethods->xLock(r, k); }
    static int ssw_unlock(ssw_file* f, int k) { SSW_FLUSHED; return r->pMethods->xUnlock(r, k); }
    static int ssw_reserved(ssw_file* f, int* out) {
        SSW_FLUSHED;
        return r->pMethods->xCheckReservedLock(r, out);
    }
    static int ssw_control(ssw_file* f, int op, void* arg) {
        SSW_FLUSHED;
        return r->pMethods->xFileControl(r, op, arg);
    }
    static int ssw_sector(ssw_file* f) { SSW_P; return r->pMethods->xSectorSize(r); }
    static int ssw_device(ssw_file* f) { SSW_P; return r->pMethods->xDeviceCharacteristics(r); }
    static int ssw_shm_map(ssw_file* f, int pg, int size, int extend, void volatile** pp) {
        SSW_FLUSHED;
        return r->pMethods->xShmMap(r, pg, size, extend, pp);
    }
    static int ssw_shm_lock(ssw_file* f, int offset, int n, int flags) {
        SSW_FLUSHED;
        return r->pMethods->xShmLock(r, offset, n, flags);
    }
    static void ssw_shm_barrier(ssw_file* f) {
        SSW_P;
        if (p->wal) (void)ssw_flush(p);
        r->pMethods->xShmBarrier(r);
    }
    static int ssw_shm_unmap(ssw_file* f, int del) {
        SSW_FLUSHED;
        return r->pMethods->xShmUnmap(r, del);
    }
    static int ssw_fetch(ssw_file* f, ssw_i64 o, int n, void** pp) {
        SSW_FLUSHED;
        return r->pMethods->xFetch(r, o, n, pp);
    }
    static int ssw_unfetch(ssw_file* f, ssw_i64 o, void* pt) {
        SSW_P;
        return r->pMethods->xUnfetch(r, o, pt);
    }

    static const ssw_io ssw_io_all = {
        3, ssw_close, ssw_read, ssw_write, ssw_truncate, ssw_sync, ssw_size, ssw_lock,
        ssw_unlock, ssw_reserved, ssw_control, ssw_sector, ssw_device, ssw_shm_map,
        ssw_shm_lock, ssw_shm_barrier, ssw_shm_unmap, ssw_fetch, ssw_unfetch,
    };

    static int ssw_open(ssw_vfs* vfs, const char* name, ssw_file* f, int flags, int* out) {
        ssw_wal* p = (ssw_wal*)f;
        int rc;
        (void)vfs;
        memset(p, 0, sizeof(*p));
        p->real = (ssw_file*)((char*)p + SSW_OFFSET);
        rc = ssw_root->xOpen(ssw_root, name, p->real, flags, out);
        if (p->real->pMethods == NULL) {
            p->base.pMethods = NULL;
            return rc;
        }
        p->wal = (flags & SSW_OPEN_WAL) != 0;
        p->methods = ssw_io_all;
        p->methods.iVersion = p->real->pMethods->iVersion < 3 ? p->real->pMethods->iVersion : 3;
        p->base.pMethods = &p->methods;
        return rc;
    }

    #define SSW_ROOT ((void)vfs, ssw_root)
    static int ssw_delete(ssw_vfs* vfs, const char* z, int d) { return SSW_ROOT->xDelete(ssw_root, z, d); }
    static int ssw_access(ssw_vfs* vfs, const char* z, int k, int* out) {
        return SSW_ROOT->xAccess(ssw_root, z, k, out);
    }
    static int ssw_full(ssw_vfs* vfs, const char* z, int n, char* out) {
        return SSW_ROOT->xFullPathname(ssw_root, z, n, out);
    }
    static void* ssw_dlopen(ssw_vfs* vfs, const char* z) { return SSW_ROOT->xDlOpen(ssw_root, z); }
    static void ssw_dlerror(ssw_vfs* vfs, int n, char* z) { SSW_ROOT->xDlError(ssw_root, n, z); }
    static void (*ssw_dlsym(ssw_vfs* vfs, void* h, const char* z))(void) {
        return SSW_ROOT->xDlSym(ssw_root, h, z);
    }
    static void ssw_dlclose(ssw_vfs* vfs, void* h) { SSW_ROOT->xDlClose(ssw_root, h); }
    static int ssw_random(ssw_vfs* vfs, int n, char* z) { return SSW_ROOT->xRandomness(ssw_root, n, z); }
    static int ssw_sleep(ssw_vfs* vfs, int us) { return SSW_ROOT->xSleep(ssw_root, us); }
    static int ssw_time(ssw_vfs* vfs, double* t) { return SSW_ROOT->xCurrentTime(ssw_root, t); }
    static int ssw_last_error(ssw_vfs* vfs, int n, char* z) {
        return SSW_ROOT->xGetLastError(ssw_root, n, z);
    }
    static int ssw_time64(ssw_vfs* vfs, ssw_i64* t) { return SSW_ROOT->xCurrentTimeInt64(ssw_root, t); }

    /* Registers the VFS (not as the default) over the default one; 0 on success. */
    static int ssw_register(void* find_fn, void* register_fn, const char* name) {
        ssw_vfs* (*find)(const char*) = (ssw_vfs* (*)(const char*))find_fn;
        int (*reg)(ssw_vfs*, int) = (int (*)(ssw_vfs*, int))register_fn;
        ssw_vfs* root;
        if (ssw_root != NULL) return 0;
        root = find(NULL);
        if (root == NULL || root->iVersion < 2 || root->xCurrentTimeInt64 == NULL) return -1;
        memset(&ssw_vfs_obj, 0, sizeof(ssw_vfs_obj));
        ssw_vfs_obj.iVersion = 2;
        ssw_vfs_obj.szOsFile = SSW_OFFSET + root->szOsFile;
        ssw_vfs_obj.mxPathname = root->mxPathname;
        ssw_vfs_obj.zName = name;
        ssw_vfs_obj.xOpen = ssw_open;
        ssw_vfs_obj.xDelete = ssw_delete;
        ssw_vfs_obj.xAccess = ssw_access;
        ssw_vfs_obj.xFullPathname = ssw_full;
        ssw_vfs_obj.xDlOpen = ssw_dlopen;
        ssw_vfs_obj.xDlError = ssw_dlerror;
        ssw_vfs_obj.xDlSym = ssw_dlsym;
        ssw_vfs_obj.xDlClose = ssw_dlclose;
        ssw_vfs_obj.xRandomness = ssw_random;
        ssw_vfs_obj.xSleep = ssw_sleep;
        ssw_vfs_obj.xCurrentTime = ssw_time;
        ssw_vfs_obj.xGetLastError = ssw_last_error;
        ssw_vfs_obj.xCurrentTimeInt64 = ssw_time64;
        ssw_root = root;
        if (reg(&ssw_vfs_obj, 0) != 0) {
            ssw_root = NULL;
            return -1;
        }
        return 0;
    }
    static unsigned long ssw_gathered_count(void) { return __atomic_load_n(&ssw_gathered, __ATOMIC_RELAXED); }
    static unsigned long ssw_flush_count(void) { return __atomic_load_n(&ssw_flushes, __ATOMIC_RELAXED); }
    static unsigned long ssw_direct_count(void) { return __atomic_load_n(&ssw_direct, __ATOMIC_RELAXED); }
    """
    int ssw_register(void* find_fn, void* register_fn, const char* name) nogil
    unsigned long ssw_gathered_count() nogil
    unsigned long ssw_flush_count() nogil
    unsigned long ssw_direct_count() nogil

#: The VFS this module's connections open their files through (see above), once registered.
WAL_BUFFER_VFS = "snapstate-walbuffer"
cdef bytes _VFS_NAME = WAL_BUFFER_VFS.encode()
cdef bint _vfs_registered = False


def wal_buffer_counts():
    """Over the process's life, through this module's VFS: (WAL writes gathered, writes of
    gathered bytes, WAL writes passed straight through). For tests and benchmarks."""
    return ssw_gathered_count(), ssw_flush_count(), ssw_direct_count()


#: Where the functions were found, once load() succeeded.
cdef object _loaded_from = None


cdef void* _find(void* handle, const char* name, list missing):
    cdef void* found = dlsym(handle, name)
    if found == NULL:
        missing.append(name.decode())
    return found


def load(path):
    """Look SQLite's functions up through ``path``, the shared object of Python's ``_sqlite3``
    module (None: the interpreter itself, where the module is built in). Returns "" once they
    are found (again: at once), else why not; nothing else here works before."""
    global _loaded_from, sqlite3_libversion, sqlite3_open_v2, sqlite3_close_v2
    global sqlite3_extended_result_codes, sqlite3_extended_errcode, sqlite3_errmsg, sqlite3_exec
    global sqlite3_get_autocommit, sqlite3_prepare_v3, sqlite3_finalize, sqlite3_reset
    global sqlite3_clear_bindings, sqlite3_step, sqlite3_bind_parameter_count, sqlite3_bind_null
    global sqlite3_bind_int64, sqlite3_bind_double, sqlite3_bind_text64, sqlite3_bind_blob64
    global sqlite3_column_count, sqlite3_column_type, sqlite3_column_int64
    global sqlite3_column_double, sqlite3_column_text, sqlite3_column_blob, sqlite3_column_bytes
    global _vfs_registered
    cdef void* h
    if _loaded_from is not None:
        return ""
    # RTLD_NOLOAD: only a library already in the process, the very one sqlite3 runs on. The
    # handle is never closed: the functions must stay where they are.
    h = dlopen(NULL, RTLD_NOW) if path is None else dlopen(str(path).encode(), RTLD_NOW | RTLD_NOLOAD)
    if h == NULL:
        return f"{path!r} is not loaded"
    # Every user checks _loaded_from first: pointers a failed lookup leaves set are never used.
    missing = []
    sqlite3_libversion = <f_libversion>_find(h, b"sqlite3_libversion", missing)
    sqlite3_open_v2 = <f_open_v2>_find(h, b"sqlite3_open_v2", missing)
    sqlite3_close_v2 = <f_db>_find(h, b"sqlite3_close_v2", missing)
    sqlite3_extended_result_codes = <f_db_int>_find(h, b"sqlite3_extended_result_codes", missing)
    sqlite3_extended_errcode = <f_db>_find(h, b"sqlite3_extended_errcode", missing)
    sqlite3_errmsg = <f_errmsg>_find(h, b"sqlite3_errmsg", missing)
    sqlite3_exec = <f_exec>_find(h, b"sqlite3_exec", missing)
    sqlite3_get_autocommit = <f_db>_find(h, b"sqlite3_get_autocommit", missing)
    sqlite3_prepare_v3 = <f_prepare_v3>_find(h, b"sqlite3_prepare_v3", missing)
    sqlite3_finalize = <f_stmt>_find(h, b"sqlite3_finalize", missing)
    sqlite3_reset = <f_stmt>_find(h, b"sqlite3_reset", missing)
    sqlite3_clear_bindings = <f_stmt>_find(h, b"sqlite3_clear_bindings", missing)
    sqlite3_step = <f_stmt>_find(h, b"sqlite3_step", missing)
    sqlite3_bind_parameter_count = <f_stmt>_find(h, b"sqlite3_bind_parameter_count", missing)
    sqlite3_bind_null = <f_stmt_int>_find(h, b"sqlite3_bind_null", missing)
    sqlite3_bind_int64 = <f_bind_int64>_find(h, b"sqlite3_bind_int64", missing)
    sqlite3_bind_double = <f_bind_double>_find(h, b"sqlite3_bind_double", missing)
    sqlite3_bind_text64 = <f_bind_text64>_find(h, b"sqlite3_bind_text64", missing)
    sqlite3_bind_blob64 = <f_bind_blob64>_find(h, b"sqlite3_bind_blob64", missing)
    sqlite3_column_count = <f_stmt>_find(h, b"sqlite3_column_count", missing)
    sqlite3_column_type = <f_stmt_int>_find(h, b"sqlite3_column_type", missing)
    sqlite3_column_int64 = <f_column_int64>_find(h, b"sqlite3_column_int64", missing)
    sqlite3_column_double = <f_column_double>_find(h, b"sqlite3_column_double", missing)
    sqlite3_column_text = <f_column_ptr>_find(h, b"sqlite3_column_text", missing)
    sqlite3_column_blob = <f_column_ptr>_find(h, b"sqlite3_column_blob", missing)
    sqlite3_column_bytes = <f_stmt_int>_find(h, b"sqlite3_column_bytes", missing)
    if missing:
        dlclose(h)
        what = ", ".join(missing) if len(missing) <= 3 else f"{len(missing)} functions"
        return f"SQLite's {what} cannot be found through {path!r}"
    _loaded_from = path if path is not None else ""
    # Without the VFS functions (or a default VFS they accept), files open through the default
    # VFS: every WAL frame is then written as SQLite writes it.
    cdef void* vfs_find = dlsym(h, b"sqlite3_vfs_find")
    cdef void* vfs_register = dlsym(h, b"sqlite3_vfs_register")
    if vfs_find != NULL and vfs_register != NULL:
        _vfs_registered = ssw_register(vfs_find, vfs_register, _VFS_NAME) == 0
    return ""


def sqlite_version():
    """The version of the SQLite library found by :func:`load`."""
    if _loaded_from is None:
        raise RuntimeError("load() has not found SQLite")
    return sqlite3_libversion().decode()


cdef object _error(int code, str message):
    """The ``sqlite3`` exception Python's module raises for ``code`` (extended result code)."""
    if (code & 0xFF) == SQLITE_CONSTRAINT:
        exc = _sqlite3.IntegrityError(message)
    else:
        exc = _sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


cdef class _Statement:
    cdef sqlite3_stmt* st
    cdef int params


cdef class Connection:
    """One SQLite connection to a database file that is already in WAL mode.

    Every method runs holding the GIL and never waits for a lock (see the module's docstring).
    Not thread-safe: its owner serializes calls. After ``fork()`` the child must open its own:
    any call in the child raises, and the child never closes its parent's.
    """

    cdef sqlite3* db
    cdef dict _statements
    cdef int _pid
    cdef readonly str path
    #: Whether appends to the WAL are gathered into one write per commit (see above).
    cdef readonly bint wal_buffer

    def __cinit__(self):
        self.db = NULL
        self._statements = {}
        self._pid = getpid()
        self.path = ""

    def __init__(self, str path, str synchronous="normal", bint wal_buffer=True):
        cdef sqlite3* db = NULL
        cdef int rc
        cdef const char* vfs = NULL
        if _loaded_from is None:
            raise RuntimeError("load() has not found SQLite")
        if synchronous not in ("off", "normal"):
            raise ValueError(
                f"synchronous must be 'off' or 'normal' (a commit must not wait for the disk "
                f"holding the GIL), got {synchronous!r}"
            )
        self.path = path
        if wal_buffer and _vfs_registered:
            vfs = _VFS_NAME
        self.wal_buffer = vfs != NULL
        rc = sqlite3_open_v2(_os.fsencode(path), &db, SQLITE_OPEN_READWRITE, vfs)
        if rc != SQLITE_OK:
            message = sqlite3_errmsg(db).decode("utf-8", "replace") if db != NULL else ""
            sqlite3_close_v2(db)
            raise _error(rc, f"unable to open database file {path!r}: {message}")
        self.db = db
        sqlite3_extended_result_codes(db, 1)
        try:
            mode = self.query("PRAGMA journal_mode", ())
            if not mode or str(mode[0][0]).lower() != "wal":
                raise _error(1, f"database {path!r} is not in WAL mode")
            self._exec(f"PRAGMA synchronous = {synchronous.upper()}")
            # Checkpoints are the backend's business (it runs them where it may wait).
            self._exec("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            self.close()
            raise

    def __dealloc__(self):
        if self.db != NULL and self._pid == getpid():
            self._finalize_all()
            sqlite3_close_v2(self.db)
        self.db = NULL

    cdef int _check(self) except -1:
        if self.db == NULL:
            raise _sqlite3.ProgrammingError("Cannot operate on a closed database.")
        if self._pid != getpid():
            raise _sqlite3.ProgrammingError(
                "this SQLite connection was opened by another process (before fork())"
            )
        return 0

    cdef object _fail(self):
        return _error(
            sqlite3_extended_errcode(self.db), sqlite3_errmsg(self.db).decode("utf-8", "replace")
        )

    cdef int _exec(self, str sql) except -1:
        if sqlite3_exec(self.db, sql.encode(), NULL, NULL, NULL) != SQLITE_OK:
            raise self._fail()
        return 0

    cdef _Statement _prepare(self, str sql):
        cdef _Statement s = self._statements.get(sql)
        cdef sqlite3_stmt* st = NULL
        if s is not None:
            return s
        data = sql.encode()
        if sqlite3_prepare_v3(
            self.db, data, <int>len(data), SQLITE_PREPARE_PERSISTENT, &st, NULL
        ) != SQLITE_OK:
            raise self._fail()
        s = _Statement()
        s.st = st
        s.params = sqlite3_bind_parameter_count(st)
        self._statements[sql] = s
        return s

    cdef int _bind(self, _Statement s, object params) except -1:
        cdef Py_ssize_t size
        cdef const char* text
        cdef int i = 0
        cdef int rc
        if len(params) != s.params:
            raise _sqlite3.ProgrammingError(
                f"Incorrect number of bindings supplied. The current statement uses "
                f"{s.params}, and there are {len(params)} supplied."
            )
        for value in params:
            i += 1
            if value is None:
                rc = sqlite3_bind_null(s.st, i)
            elif type(value) is bytes:
                # The caller holds ``params`` until the statement is reset: no copy.
                rc = sqlite3_bind_blob64(
                    s.st, i, PyBytes_AS_STRING(value), <sqlite3_uint64>PyBytes_GET_SIZE(value),
                    SQLITE_STATIC,
                )
            elif type(value) is str:
                text = PyUnicode_AsUTF8AndSize(value, &size)
                rc = sqlite3_bind_text64(
                    s.st, i, text, <sqlite3_uint64>size, SQLITE_STATIC, SQLITE_UTF8
                )
            elif isinstance(value, int):
                rc = sqlite3_bind_int64(s.st, i, <sqlite3_int64>value)
            elif isinstance(value, float):
                rc = sqlite3_bind_double(s.st, i, <double>value)
            elif isinstance(value, (bytearray, memoryview)):
                copy = bytes(value)
                rc = sqlite3_bind_blob64(
                    s.st, i, PyBytes_AS_STRING(copy), <sqlite3_uint64>PyBytes_GET_SIZE(copy),
                    SQLITE_TRANSIENT,
                )
            else:
                raise _sqlite3.ProgrammingError(
                    f"Error binding parameter {i}: type '{type(value).__name__}' is not supported"
                )
            if rc != SQLITE_OK:
                raise self._fail()
        return 0

    cdef object _row(self, sqlite3_stmt* st, int columns):
        cdef int c
        cdef int kind
        cdef int n
        cdef const void* blob
        row = []
        for c in range(columns):
            kind = sqlite3_column_type(st, c)
            if kind == SQLITE_INTEGER:
                row.append(sqlite3_column_int64(st, c))
            elif kind == SQLITE_FLOAT:
                row.append(sqlite3_column_double(st, c))
            elif kind == SQLITE_TEXT:
                text = <const char*>sqlite3_column_text(st, c)
                n = sqlite3_column_bytes(st, c)
                row.append(PyUnicode_DecodeUTF8(text, n, NULL))
            elif kind == SQLITE_BLOB:
                blob = sqlite3_column_blob(st, c)
                n = sqlite3_column_bytes(st, c)
                row.append(PyBytes_FromStringAndSize(<const char*>blob, n) if n else b"")
            else:
                row.append(None)
        return tuple(row)

    @property
    def in_transaction(self):
        """Whether a transaction is open."""
        self._check()
        return not sqlite3_get_autocommit(self.db)

    cdef int _control(self, str sql) except -1:
        """Run a transaction statement (no parameters, no rows) prepared once per connection
        (parsing it at every call, as ``sqlite3_exec`` does, cost about 0.5 us); its result
        code, left for the caller to judge (the statement is reset either way)."""
        cdef _Statement s = self._prepare(sql)
        cdef int rc = sqlite3_step(s.st)
        sqlite3_reset(s.st)
        return rc

    def begin(self):
        """``BEGIN IMMEDIATE``: True once the write lock is taken, False at once if another
        connection holds it (nothing is left open then)."""
        cdef int rc
        self._check()
        rc = self._control("BEGIN IMMEDIATE")
        if rc == SQLITE_DONE:
            return True
        if (rc & 0xFF) == SQLITE_BUSY or (rc & 0xFF) == SQLITE_LOCKED:
            return False
        raise self._fail()

    def commit(self):
        self._check()
        if self._control("COMMIT") != SQLITE_DONE:
            raise self._fail()

    def rollback(self):
        """Roll back the open transaction, if any."""
        self._check()
        if not sqlite3_get_autocommit(self.db) and self._control("ROLLBACK") != SQLITE_DONE:
            raise self._fail()

    def query(self, str sql, params):
        """Run one statement with ``params``; its rows as tuples."""
        cdef _Statement s
        cdef int rc
        cdef int columns
        self._check()
        s = self._prepare(sql)
        rows = []
        try:
            self._bind(s, params)
            columns = sqlite3_column_count(s.st)
            while True:
                rc = sqlite3_step(s.st)
                if rc == SQLITE_ROW:
                    rows.append(self._row(s.st, columns))
                elif rc == SQLITE_DONE:
                    break
                else:
                    raise self._fail()
        finally:
            sqlite3_reset(s.st)
            sqlite3_clear_bindings(s.st)
        return rows

    def executemany(self, str sql, rows):
        """Run one statement once per parameter tuple in ``rows``."""
        cdef _Statement s
        cdef int rc
        self._check()
        s = self._prepare(sql)
        try:
            for params in rows:
                self._bind(s, params)
                rc = sqlite3_step(s.st)
                if rc != SQLITE_DONE and rc != SQLITE_ROW:
                    raise self._fail()
                sqlite3_reset(s.st)
        finally:
            sqlite3_reset(s.st)
            sqlite3_clear_bindings(s.st)

    cdef void _finalize_all(self):
        cdef _Statement s
        if self._statements is None:  # cleared already (object being torn down)
            return
        for s in self._statements.values():
            sqlite3_finalize(s.st)
            s.st = NULL
        self._statements.clear()

    def close(self):
        """Roll back what is open and close; closing twice does nothing."""
        if self.db == NULL or self._pid != getpid():
            self.db = NULL
            return
        if not sqlite3_get_autocommit(self.db):
            sqlite3_exec(self.db, b"ROLLBACK", NULL, NULL, NULL)
        self._finalize_all()
        sqlite3_close_v2(self.db)
        self.db = NULL
