# cython: language_level=3
"""Compiled encoder core (see ``_core.pyi`` for the contract; ``_core_py.py`` is the pure-Python twin).

Hot paths are typed C: the batch buffers, the random pool and UUID formatting, time formatting, the connect key
checks, and two writers: the Barchart writer, which writes whole events without building a dict, and the Connect
writer, which validates and writes an event in one walk, byte for byte what orjson writes (strings, 64-bit ints,
floats in orjson's spelling of the shortest repr, naive datetimes, nested dicts, lists and tuples). Whatever it
does not handle itself goes to the scan + one orjson call per event, as do the Ruby-style and "none" rules. Every
error path delegates to the twin's functions, so messages, fields and error dicts are the twin's by construction;
the differential tests check the bytes. ``BatcherBase`` holds the hot path of ``Batcher.push``, and
``hub_connect_bulk`` the hub's: the Connect writer under the hub's key rules, with its id and timestamp checks.
"""

cimport cython
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport (
    PyDate_Check,
    PyDate_CheckExact,
    PyDateTime_Check,
    PyDateTime_CheckExact,
    PyTime_Check,
    datetime_day,
    datetime_hour,
    datetime_microsecond,
    datetime_minute,
    datetime_month,
    datetime_new,
    datetime_second,
    datetime_tzinfo,
    datetime_year,
    date_day,
    date_month,
    date_year,
    import_datetime,
)
from cpython.dict cimport (
    PyDict_Check,
    PyDict_Contains,
    PyDict_GetItemWithError,
    PyDict_Next,
    PyDict_SetItem,
    PyDict_Size,
)
from cpython.list cimport PyList_Check, PyList_CheckExact, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_Check, PyLong_CheckExact
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX, PY_SSIZE_T_MIN
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.set cimport PySet_Contains
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_Check, PyUnicode_CheckExact
from libc.math cimport ceil, frexp, isfinite, ldexp, llround
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset, strlen

import os

import orjson

from . import _core_py as _py
from .dialects import Dialect
from .errors import EventError, EventTooLargeError, EventTypeError

__all__ = [
    "Encoder",
    "Batch",
    "BatcherBase",
    "uuid4_str",
    "format_iso_naive",
    "format_iso_seconds_z",
    "hub_connect_bulk",
    "hub_connect_scan",
    "hub_id_hashes",
    "hub_index_keys",
    "hub_timestamp_ok",
]

cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    Py_UCS4 PyUnicode_READ_CHAR(object o, Py_ssize_t index)
    Py_ssize_t PyUnicode_FindChar(object s, Py_UCS4 ch, Py_ssize_t start, Py_ssize_t end, int direction) except -2
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    bint PyBool_Check(object o)
    bint PyFloat_Check(object o)
    double PyFloat_AS_DOUBLE(object o)
    bint PyFloat_CheckExact(object o)
    bint PyDict_CheckExact(object o)
    bint PyTuple_CheckExact(object o)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    PyObject* PySequence_Fast_GET_ITEM(object o, Py_ssize_t i)
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* ptype) except? NULL
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    int Py_DTSF_ADD_DOT_0
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, object kwnames)
    size_t PY_VECTORCALL_ARGUMENTS_OFFSET
    void PyErr_Clear()

cdef extern from *:
    """
    #ifdef _WIN32
    #include <windows.h>
    static long long eventpush_now_micros(void) {
        FILETIME ft; ULARGE_INTEGER u;
        GetSystemTimePreciseAsFileTime(&ft);
        u.LowPart = ft.dwLowDateTime; u.HighPart = ft.dwHighDateTime;
        return (long long)((u.QuadPart - 116444736000000000ULL) / 10);
    }
    #else
    #include <time.h>
    static long long eventpush_now_micros(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
    }
    #endif
    """
    long long eventpush_now_micros() nogil

cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>
    /* SipHash-2-4 (Aumasson and Bernstein), 64-bit output, little-endian reads on every platform. */
    #define EP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
    #define EP_SIPROUND do { \
        v0 += v1; v1 = EP_ROTL(v1, 13); v1 ^= v0; v0 = EP_ROTL(v0, 32); \
        v2 += v3; v3 = EP_ROTL(v3, 16); v3 ^= v2; \
        v0 += v3; v3 = EP_ROTL(v3, 21); v3 ^= v0; \
        v2 += v1; v1 = EP_ROTL(v1, 17); v1 ^= v2; v2 = EP_ROTL(v2, 32); } while (0)
    static uint64_t ep_le64(const unsigned char *p) {
        return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24) |
               ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
    }
    /* SipHash-2-4 of the message prefix (8 bytes) followed by m (n bytes). */
    static uint64_t ep_siphash24(const unsigned char *key, const unsigned char *prefix, const unsigned char *m,
                                 size_t n) {
        uint64_t k0 = ep_le64(key), k1 = ep_le64(key + 8);
        uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
        uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
        uint64_t total = (uint64_t)n + 8, w, last;
        size_t i, rest;
        int r;
        w = ep_le64(prefix);
        v3 ^= w; for (r = 0; r < 2; r++) EP_SIPROUND; v0 ^= w;
        for (i = 0; i + 8 <= n; i += 8) {
            w = ep_le64(m + i);
            v3 ^= w; for (r = 0; r < 2; r++) EP_SIPROUND; v0 ^= w;
        }
        last = total << 56;
        rest = n - i;
        while (rest > 0) { rest--; last |= (uint64_t)m[i + rest] << (8 * rest); }
        v3 ^= last; for (r = 0; r < 2; r++) EP_SIPROUND; v0 ^= last;
        v2 ^= 0xff;
        for (r = 0; r < 4; r++) EP_SIPROUND;
        return v0 ^ v1 ^ v2 ^ v3;
    }
    """
    uint64_t ep_siphash24(const unsigned char* key, const unsigned char* prefix, const unsigned char* m,
                          size_t n) nogil

import_datetime()

from uuid import UUID as _UUID_TYPE

cdef object _UUID = _UUID_TYPE

cdef object _dumps = _py.orjson_dumps  # orjson.dumps itself unless the installed orjson must be kept shallow
# orjson from 3.11.7 writes a positive exponent "1e+16", earlier ones "1e16" (Python 3.9 has at most 3.11.5)
cdef bint _EXP_PLUS = orjson.dumps(1e16) == b"1e+16"
cdef object _OPT_CONNECT_PY = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME  # the twin's options
cdef object _OPT_NATIVE_PY = orjson.OPT_NON_STR_KEYS
cdef object _iso_default = _py._iso_default
cdef tuple _DUMPS_KWNAMES = ("default", "option")
cdef object _os_urandom = os.urandom
cdef object _DIALECT_LIMIT = _py._DIALECT_LIMIT
cdef object _UNSET = object()
cdef object _DEEP = _py._DEEP  # stands where a container sits MAX_DEPTH deep (Ruby-style conversion)
cdef object _MISSING = _py._MISSING


cdef bytes _call_dumps(object obj, object default, object option):
    # PERF: orjson.dumps(obj, default=..., option=...) through vectorcall with kwnames: no kwargs dict per call
    cdef PyObject* args[4]
    cdef object result
    args[0] = NULL
    args[1] = <PyObject*>obj
    args[2] = <PyObject*>default
    args[3] = <PyObject*>option
    result = PyObject_Vectorcall(_dumps, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, _DUMPS_KWNAMES)
    return <bytes>result


cdef str _K_ID = "id"
cdef str _K_TIMESTAMP = "timestamp"
cdef str _K_CUSTOMER = "customer"
cdef str _K_PRODUCT = "product"
cdef str _K_TYPE = "type"
cdef str _K_VERSION = "version"
cdef str _K_CONTEXT = "context"

cdef enum:
    RULES_CONNECT_PY = 1
    RULES_CONNECT_RB = 2
    RULES_BARCHART = 3
    RULES_NONE = 4

cdef enum:
    FRAMING_COLLECTIONS = 1
    FRAMING_EVENTS = 2
    FRAMING_NDJSON = 3
    FRAMING_ARRAY = 4

# orjson refuses 255 nested containers; with an orjson that cannot write them safely, 101 (the twin's constant)
cdef int MAX_DEPTH = _py.MAX_DEPTH

cdef enum:
    RANDOM_CHUNK = 4096
    FIRST_CAPACITY = 1024

cdef long long _MIN_MICROS = -62135596800LL * 1000000LL
cdef long long _MAX_MICROS = 253402300800LL * 1000000LL - 1
cdef long long _US_PER_DAY = 86400LL * 1000000LL

cdef const char* _HEX = b"0123456789abcdef"


# ---------------------------------------------------------------------------------------------------------------
# Growable byte buffer (py-pgproto style: start small, grow by doubling with PyMem_Realloc)

@cython.final
cdef class _Buf:
    cdef char* data
    cdef Py_ssize_t len
    cdef Py_ssize_t cap

    def __cinit__(self):
        self.data = NULL
        self.len = 0
        self.cap = 0

    def __dealloc__(self):
        PyMem_Free(self.data)
        self.data = NULL

    cdef inline int reserve(self, Py_ssize_t extra) except -1:
        if self.len + extra > self.cap:
            self._grow(self.len + extra)
        return 0

    cdef int _grow(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.cap if self.cap else FIRST_CAPACITY
        cdef char* p
        while cap < need:
            cap <<= 1
        p = <char*>PyMem_Realloc(self.data, cap)
        if p == NULL:
            raise MemoryError()
        self.data = p
        self.cap = cap
        return 0

    cdef inline int write(self, const char* s, Py_ssize_t n) except -1:
        if self.len + n > self.cap:
            self._grow(self.len + n)
        memcpy(self.data + self.len, s, n)
        self.len += n
        return 0

    cdef inline int write_byte(self, char c) except -1:
        if self.len + 1 > self.cap:
            self._grow(self.len + 1)
        self.data[self.len] = c
        self.len += 1
        return 0

    cdef char* take(self):
        """Hand the memory to the caller (a Batch) and start empty."""
        cdef char* p = self.data
        self.data = NULL
        self.len = 0
        self.cap = 0
        return p


cdef int _write_ll(_Buf buf, long long v) except -1:
    cdef char tmp[24]
    cdef int i = 24
    cdef unsigned long long u
    cdef bint neg = v < 0
    if neg:
        u = <unsigned long long>(-(v + 1)) + 1
    else:
        u = <unsigned long long>v
    while True:
        i -= 1
        tmp[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if neg:
        i -= 1
        tmp[i] = b'-'
    buf.write(tmp + i, 24 - i)
    return 0


cdef unsigned char _ESC[256]   # 1 for the bytes a JSON string escapes: controls, '"' and '\\'
for _c in range(256):
    _ESC[_c] = 1 if (_c < 0x20 or _c == 34 or _c == 92) else 0


cdef inline bint _needs_escape8(uint64_t x) noexcept:
    """Whether any of the eight bytes in ``x`` is one a JSON string escapes (below 0x20, '"' or '\\').

    The classic word-at-a-time tests (has-less-than and has-zero-byte): exact about whether some byte matches,
    which is all the caller needs (it finds which one byte by byte). Bytes of 0x80 and above never match."""
    cdef uint64_t q = x ^ 0x2222222222222222ULL
    cdef uint64_t b = x ^ 0x5c5c5c5c5c5c5c5cULL
    return (((x - 0x2020202020202020ULL) & ~x)
            | ((q - 0x0101010101010101ULL) & ~q)
            | ((b - 0x0101010101010101ULL) & ~b)) & 0x8080808080808080ULL != 0


cdef inline int _write_json_str(_Buf buf, object s) except -1:
    """Write ``s`` as a JSON string exactly as orjson does. Returns 1 when ``s`` cannot be encoded (surrogates)."""
    cdef Py_ssize_t n, i
    cdef const unsigned char* p
    cdef char* w
    cdef uint64_t word
    if PyUnicode_IS_COMPACT_ASCII(s):
        # PERF: the usual string: its bytes are the str's own data
        p = <const unsigned char*>PyUnicode_DATA(s)
        n = PyUnicode_GET_LENGTH(s)
    else:
        p = <const unsigned char*>PyUnicode_AsUTF8AndSize(s, &n)
        if p == NULL:
            PyErr_Clear()
            return 1
    if buf.len + n + 2 > buf.cap:
        buf._grow(buf.len + n + 2)
    w = buf.data + buf.len
    w[0] = b'"'
    # PERF: copy while scanning, eight bytes at a time while none of them needs an escape (the whole string in
    # the common case), then byte by byte
    i = 0
    while i + 8 <= n:
        memcpy(&word, p + i, 8)
        if _needs_escape8(word):
            break
        memcpy(w + 1 + i, &word, 8)
        i += 8
    while i < n and not _ESC[p[i]]:
        w[1 + i] = <char>p[i]
        i += 1
    if i == n:
        w[n + 1] = b'"'
        buf.len += n + 2
        return 0
    buf.len += 1 + i
    _write_escaped(buf, p + i, n - i)
    return 0


cdef int _write_escaped(_Buf buf, const unsigned char* p, Py_ssize_t n) except -1:
    """The rest of a string from its first byte that needs an escape, and the closing quote."""
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if not _ESC[c]:
            buf.write_byte(<char>c)
        elif c == 34:
            buf.write(b'\\"', 2)
        elif c == 92:
            buf.write(b'\\\\', 2)
        elif c == 10:
            buf.write(b'\\n', 2)
        elif c == 13:
            buf.write(b'\\r', 2)
        elif c == 9:
            buf.write(b'\\t', 2)
        elif c == 8:
            buf.write(b'\\b', 2)
        elif c == 12:
            buf.write(b'\\f', 2)
        else:
            buf.write(b'\\u00', 4)
            buf.write_byte(_HEX[c >> 4])
            buf.write_byte(_HEX[c & 15])
    buf.write_byte(b'"')
    return 0


cdef bint _has_null(const char* p, Py_ssize_t n):
    # PERF: orjson writes NaN/Infinity as null; only a body containing "null" needs the NaN walk.
    cdef const char* end = p + n
    cdef const char* q = p
    while end - q >= 4:
        q = <const char*>memchr(q, b'n', (end - q) - 3)
        if q == NULL:
            return False
        if q[1] == b'u' and q[2] == b'l' and q[3] == b'l':
            return True
        q += 1
    return False


# ---------------------------------------------------------------------------------------------------------------
# Time

cdef inline long long _floordiv(long long a, long long b):
    cdef long long q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef void _civil_from_days(long long z, int* y, int* m, int* d):
    # Howard Hinnant's days -> civil date (proleptic Gregorian)
    cdef long long era, doe, yoe, doy, mp
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d[0] = <int>(doy - (153 * mp + 2) // 5 + 1)
    m[0] = <int>(mp + 3 if mp < 10 else mp - 9)
    y[0] = <int>(yoe + era * 400 + (1 if m[0] <= 2 else 0))


cdef long long _days_from_civil(long long y, long long m, long long d):
    cdef long long era, yoe, doy, doe
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef struct _Civil:
    int year, month, day, hour, minute, second, micro


cdef _Civil _split_micros(long long micros):
    cdef _Civil c
    cdef long long days = _floordiv(micros, _US_PER_DAY)
    cdef long long rest = micros - days * _US_PER_DAY
    _civil_from_days(days, &c.year, &c.month, &c.day)
    c.micro = <int>(rest % 1000000)
    rest //= 1000000
    c.second = <int>(rest % 60)
    rest //= 60
    c.minute = <int>(rest % 60)
    c.hour = <int>(rest // 60)
    return c


cdef long long _micros_of(object value) except? -1:
    """The clock's value as a checked C integer (the twin's ``_check_micros`` raises the same errors)."""
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(value):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and _MIN_MICROS <= v <= _MAX_MICROS:
            return v
    value = _py._check_micros(value)  # raises TypeError / OverflowError, or accepts an int subclass
    return PyLong_AsLongLongAndOverflow(value, &overflow)


cdef inline void _put2(char* p, int v):
    p[0] = <char>(48 + v // 10)
    p[1] = <char>(48 + v % 10)


cdef inline void _put4(char* p, int v):
    p[0] = <char>(48 + v // 1000)
    p[1] = <char>(48 + (v // 100) % 10)
    p[2] = <char>(48 + (v // 10) % 10)
    p[3] = <char>(48 + v % 10)


cdef int _fmt_seconds(char* p, int y, int mo, int d, int h, int mi, int s):
    _put4(p, y)
    p[4] = b'-'
    _put2(p + 5, mo)
    p[7] = b'-'
    _put2(p + 8, d)
    p[10] = b'T'
    _put2(p + 11, h)
    p[13] = b':'
    _put2(p + 14, mi)
    p[16] = b':'
    _put2(p + 17, s)
    return 19


cdef str _ascii(const char* p, Py_ssize_t n):
    # PERF: an ASCII str filled in place (no max-char scan)
    cdef object s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return <str>s


cdef int _fmt_iso_naive(char* p, int y, int mo, int d, int h, int mi, int s, int us):
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]`` into ``p`` (microseconds only when non-zero); returns the length."""
    cdef int n
    _fmt_seconds(p, y, mo, d, h, mi, s)
    if not us:
        return 19
    p[19] = b'.'
    for n in range(25, 19, -1):
        p[n] = <char>(48 + us % 10)
        us //= 10
    return 26


def format_iso_naive(micros):
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]`` (naive UTC; microseconds only when non-zero), like ``isoformat()``."""
    cdef char out[32]
    cdef _Civil c = _split_micros(_micros_of(micros))
    return _ascii(out, _fmt_iso_naive(out, c.year, c.month, c.day, c.hour, c.minute, c.second, c.micro))


def format_iso_seconds_z(micros):
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    cdef char out[24]
    cdef _Civil c = _split_micros(_micros_of(micros))
    _fmt_seconds(out, c.year, c.month, c.day, c.hour, c.minute, c.second)
    out[19] = b'Z'
    return _ascii(out, 20)


cdef object _naive_datetime(long long micros):
    cdef _Civil c = _split_micros(micros)
    return datetime_new(c.year, c.month, c.day, c.hour, c.minute, c.second, c.micro, None)


# ---------------------------------------------------------------------------------------------------------------
# Random pool and UUID4

@cython.final
cdef class _Pool:
    cdef object urandom
    cdef bytes buf
    cdef Py_ssize_t pos

    def __cinit__(self, urandom):
        self.urandom = urandom
        self.buf = b""
        self.pos = 0

    cdef str uuid(self):
        # PERF: 16 bytes at a time from a 4 KiB pool; hex formatted in C
        cdef Py_ssize_t pos = self.pos
        cdef object raw
        if pos + 16 > PyBytes_GET_SIZE(self.buf):
            raw = (self.urandom if self.urandom is not None else _os_urandom)(RANDOM_CHUNK)
            if not PyBytes_CheckExact(raw):
                raw = bytes(raw)
            if PyBytes_GET_SIZE(raw) < 16:
                raise ValueError("urandom returned fewer than 16 bytes")
            self.buf = raw
            pos = 0
        self.pos = pos + 16
        return _uuid_from(<const unsigned char*>PyBytes_AS_STRING(self.buf) + pos)


cdef inline void _hex2(char* p, unsigned char b) noexcept:
    p[0] = _HEX[b >> 4]
    p[1] = _HEX[b & 15]


cdef str _uuid_from(const unsigned char* raw):
    # PERF: written straight into a new ASCII str, no loop branches
    cdef object s = PyUnicode_New(36, 127)
    cdef char* out = <char*>PyUnicode_DATA(s)
    _hex2(out, raw[0])
    _hex2(out + 2, raw[1])
    _hex2(out + 4, raw[2])
    _hex2(out + 6, raw[3])
    out[8] = b'-'
    _hex2(out + 9, raw[4])
    _hex2(out + 11, raw[5])
    out[13] = b'-'
    _hex2(out + 14, (raw[6] & 0x0F) | 0x40)
    _hex2(out + 16, raw[7])
    out[18] = b'-'
    _hex2(out + 19, (raw[8] & 0x3F) | 0x80)
    _hex2(out + 21, raw[9])
    out[23] = b'-'
    _hex2(out + 24, raw[10])
    _hex2(out + 26, raw[11])
    _hex2(out + 28, raw[12])
    _hex2(out + 30, raw[13])
    _hex2(out + 32, raw[14])
    _hex2(out + 34, raw[15])
    return <str>s


cdef _Pool _SHARED_POOL = _Pool(None)


def uuid4_str(urandom=None):
    """One UUID4 string from the shared buffered pool (or from ``urandom(16)`` when given)."""
    cdef bytes raw
    if urandom is None:
        return _SHARED_POOL.uuid()
    raw = bytes(urandom(16))
    if len(raw) < 16:
        raise ValueError("urandom returned fewer than 16 bytes")
    return _uuid_from(<const unsigned char*>PyBytes_AS_STRING(raw))


# ---------------------------------------------------------------------------------------------------------------
# Batch

@cython.final
cdef class Batch:
    """A sealed batch: one contiguous body plus the span of every event in it (see ``_core.pyi``)."""

    cdef char* _buf
    cdef Py_ssize_t _nbytes
    cdef Py_ssize_t _n
    cdef Py_ssize_t* _offs
    cdef Py_ssize_t* _lens
    cdef list _colls
    cdef list _tags
    cdef list _groups
    cdef object _dialect
    cdef int _exports
    cdef bint _keyed              # PERF: tags are (collection, i), built on demand from _colls and the positions
    cdef bint _positional         # PERF: tags are input positions, kept in a C array (_ptags) until asked for
    cdef Py_ssize_t* _ptags

    def __cinit__(self):
        self._buf = NULL
        self._offs = NULL
        self._lens = NULL
        self._ptags = NULL
        self._n = 0
        self._nbytes = 0
        self._exports = 0
        self._colls = []
        self._tags = []
        self._groups = []

    def __init__(self):
        raise TypeError("batches are made by an Encoder")

    def __dealloc__(self):
        PyMem_Free(self._buf)
        PyMem_Free(self._offs)
        PyMem_Free(self._lens)
        PyMem_Free(self._ptags)

    def __getbuffer__(self, Py_buffer* view, int flags):
        # read-only: PyBuffer_FillInfo refuses PyBUF_WRITABLE requests
        PyBuffer_FillInfo(view, self, self._buf if self._buf != NULL else <char*>b"", self._nbytes, 1, flags)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer* view):
        self._exports -= 1

    @property
    def count(self):
        """Number of events."""
        return self._n

    @property
    def nbytes(self):
        """Length of the body in bytes."""
        return self._nbytes

    @property
    def dialect(self):
        return self._dialect

    def __len__(self):
        return self._n

    def __repr__(self):
        return f"<Batch {self._dialect.name} count={self._n} nbytes={self._nbytes}>"

    def __reduce__(self):
        raise TypeError("a Batch cannot be pickled; send body() and re-encode")

    cdef Py_ssize_t _check(self, object i) except -1:
        cdef Py_ssize_t k
        if not isinstance(i, int):
            raise TypeError(f"batch indices must be integers, not {type(i).__name__}")
        if not 0 <= i < self._n:
            raise IndexError(f"batch index {i} out of range (count {self._n})")
        k = i
        return k

    def body(self):
        """A copy of the body."""
        return PyBytes_FromStringAndSize(self._buf, self._nbytes) if self._nbytes else b""

    def event(self, i):
        """The encoded bytes of event ``i`` (no framing)."""
        cdef Py_ssize_t k = self._check(i)
        return PyBytes_FromStringAndSize(self._buf + self._offs[k], self._lens[k])

    def span(self, i):
        """``(offset, length)`` of event ``i`` inside the body."""
        cdef Py_ssize_t k = self._check(i)
        return (self._offs[k], self._lens[k])

    def collection(self, i):
        """The collection of event ``i`` (None for dialects without collections)."""
        return self._colls[self._check(i)]

    def tag(self, i):
        """The tag given with event ``i``."""
        cdef Py_ssize_t k = self._check(i)
        return self._tag(k)

    cdef object _tag(self, Py_ssize_t k):
        cdef object value = self._ptags[k] if self._positional else self._tags[k]
        if self._keyed:
            return (self._colls[k], value)
        return value

    def tags(self):
        """All tags in body order."""
        cdef Py_ssize_t k
        return [self._tag(k) for k in range(self._n)]

    def groups(self):
        """``[(collection, start, stop), …]`` in body order."""
        return list(self._groups)

    def subset(self, indices):
        """A new sealed batch of the given events, framed anew from their stored bytes."""
        cdef _Acc acc = _Acc(self._dialect)
        cdef Py_ssize_t k
        acc.keyed = self._keyed
        acc.positional = self._positional
        for i in indices:
            k = self._check(i)
            if self._positional:
                acc.append(self._buf + self._offs[k], self._lens[k], self._colls[k], None, self._ptags[k])
            else:
                acc.append(self._buf + self._offs[k], self._lens[k], self._colls[k], self._tags[k], 0)
        if not acc.n:
            raise ValueError("an empty subset")
        return acc.seal()

    def release(self):
        """Give the buffer back. Raises ``BufferError`` while a view is alive; afterwards the batch is empty."""
        if self._exports:
            raise BufferError("the batch is exported: release every memoryview of it first")
        PyMem_Free(self._buf)
        PyMem_Free(self._offs)
        PyMem_Free(self._lens)
        PyMem_Free(self._ptags)
        self._buf = NULL
        self._offs = NULL
        self._lens = NULL
        self._ptags = NULL
        self._n = 0
        self._nbytes = 0
        self._colls = []
        self._tags = []
        self._groups = []


# ---------------------------------------------------------------------------------------------------------------
# The open batch

@cython.final
cdef class _Acc:
    """Event bytes of the open batch, their spans, collections and tags, and the body size if sealed now.

    For ``events`` / ``ndjson`` / ``array`` framing the buffer already is the body (prefix and separators written
    as events arrive; sealing appends the suffix and hands the memory to the Batch). For ``collections`` the
    buffer holds the bare events and sealing groups them into a new body.
    """

    cdef object dialect
    cdef int framing
    cdef _Buf buf
    cdef Py_ssize_t* offs
    cdef Py_ssize_t* lens
    cdef int* gids
    cdef Py_ssize_t cap
    cdef Py_ssize_t n
    cdef Py_ssize_t nbytes
    cdef list colls
    cdef list tags
    cdef dict gindex       # collection -> group id
    cdef list gnames       # escaped names, first-seen order
    cdef list gcolls       # collection names, first-seen order
    cdef dict names        # collection -> escaped JSON name (bytes)
    cdef Py_ssize_t hint   # PERF: the next buffer starts at the size the last batch reached
    cdef object last_coll  # PERF: the collection of the previous event and its group (identity check)
    cdef int last_gid
    cdef bint keyed        # tags are input positions inside their collection (encode_batch with a mapping)
    cdef bint positional   # tags are input positions (encode_batch): kept in ptags, not as Python ints
    cdef Py_ssize_t* ptags

    def __cinit__(self, dialect):
        self.dialect = dialect
        self.framing = _framing_code(dialect.framing)
        self.offs = NULL
        self.lens = NULL
        self.gids = NULL
        self.ptags = NULL
        self.cap = 0
        self.names = {}
        self.hint = 0
        self.keyed = False
        self.positional = False
        self.reset()

    def __dealloc__(self):
        PyMem_Free(self.offs)
        PyMem_Free(self.lens)
        PyMem_Free(self.gids)
        PyMem_Free(self.ptags)

    cdef int reset(self) except -1:
        self.buf = _Buf()
        self.n = 0
        self.nbytes = 0
        self.colls = []
        self.tags = []
        self.gindex = {}
        self.gnames = []
        self.gcolls = []
        self.last_coll = None
        self.last_gid = 0
        return 0

    cdef bytes escaped(self, object collection):
        cdef object name = self.names.get(collection) if PyUnicode_CheckExact(collection) else None
        if name is None:
            if not isinstance(collection, str):
                raise EventTypeError(_py.MSG_COLLECTION)
            try:
                name = _dumps(collection)
            except TypeError as exc:
                raise EventTypeError(f"Collection name cannot be encoded: {exc}") from None
            self.names[collection] = name
        return <bytes>name

    cdef Py_ssize_t size_with(self, Py_ssize_t length, object collection) except -1:
        cdef int framing = self.framing
        if framing == FRAMING_NDJSON:
            return self.nbytes + length + 1
        if framing == FRAMING_EVENTS:
            return (self.nbytes + length + 1) if self.n else length + 13
        if framing == FRAMING_ARRAY:
            return (self.nbytes + length + 1) if self.n else length + 2
        if not self.n:
            return PyBytes_GET_SIZE(self.escaped(collection)) + length + 5
        if collection is self.last_coll:
            return self.nbytes + length + 1
        if collection in self.gindex:
            return self.nbytes + length + 1
        return self.nbytes + PyBytes_GET_SIZE(self.escaped(collection)) + length + 4

    cdef int _grow_spans(self) except -1:
        cdef Py_ssize_t cap = self.cap * 2 if self.cap else 64
        cdef void* p
        p = PyMem_Realloc(self.offs, cap * sizeof(Py_ssize_t))
        if p == NULL:
            raise MemoryError()
        self.offs = <Py_ssize_t*>p
        p = PyMem_Realloc(self.lens, cap * sizeof(Py_ssize_t))
        if p == NULL:
            raise MemoryError()
        self.lens = <Py_ssize_t*>p
        p = PyMem_Realloc(self.gids, cap * sizeof(int))
        if p == NULL:
            raise MemoryError()
        self.gids = <int*>p
        p = PyMem_Realloc(self.ptags, cap * sizeof(Py_ssize_t))
        if p == NULL:
            raise MemoryError()
        self.ptags = <Py_ssize_t*>p
        self.cap = cap
        return 0

    cdef int append(self, const char* data, Py_ssize_t length, object collection, object tag,
                    Py_ssize_t ptag) except -1:
        cdef int framing = self.framing
        cdef _Buf buf = self.buf
        cdef object gobj
        cdef int gid
        cdef bytes name
        if self.n == self.cap:
            self._grow_spans()
        if buf.cap == 0 and self.hint:
            buf.reserve(self.hint)
        if framing == FRAMING_COLLECTIONS:
            if self.n and collection is self.last_coll:
                gid = self.last_gid
                self.nbytes += length + 1
            else:
                self.nbytes = self.size_with(length, collection)
                gobj = self.gindex.get(collection)
                if gobj is None:
                    gid = len(self.gcolls)
                    self.gindex[collection] = gid
                    self.gcolls.append(collection)
                    self.gnames.append(self.escaped(collection))
                else:
                    gid = gobj
                self.last_coll = collection
                self.last_gid = gid
            self.gids[self.n] = gid
            # PERF: laid out as the body of a one-collection batch (the common case); sealing rebuilds the body
            # only when several collections were mixed
            if self.n:
                buf.write_byte(b',')
            else:
                name = <bytes>self.gnames[0]
                buf.write_byte(b'{')
                buf.write(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
                buf.write(b':[', 2)
        else:
            collection = None
            self.nbytes = self.size_with(length, None)
            if framing == FRAMING_EVENTS:
                if self.n:
                    buf.write_byte(b',')
                else:
                    buf.write(b'{"events":[', 11)
            elif framing == FRAMING_ARRAY:
                buf.write_byte(b',' if self.n else b'[')
        self.offs[self.n] = buf.len
        self.lens[self.n] = length
        buf.write(data, length)
        if framing == FRAMING_NDJSON:
            buf.write_byte(b'\n')
        self.colls.append(collection)
        if self.positional:
            self.ptags[self.n] = ptag
        else:
            self.tags.append(tag)
        self.n += 1
        return 0

    cdef Batch seal(self):
        cdef Batch batch = Batch.__new__(Batch)
        cdef int framing = self.framing
        cdef Py_ssize_t n = self.n, i, j, g, ng, pos, start
        cdef _Buf body
        cdef Py_ssize_t* order
        cdef Py_ssize_t* counts
        cdef bytes name
        batch._dialect = self.dialect
        batch._n = n
        batch._keyed = self.keyed
        batch._positional = self.positional
        if framing != FRAMING_COLLECTIONS or len(self.gcolls) == 1:
            if framing == FRAMING_EVENTS or framing == FRAMING_COLLECTIONS:
                self.buf.write(b']}', 2)
            elif framing == FRAMING_ARRAY:
                self.buf.write_byte(b']')
            batch._nbytes = self.buf.len
            self.hint = self.buf.len
            batch._buf = self.buf.take()
            batch._offs = self.offs
            batch._lens = self.lens
            batch._colls = self.colls
            batch._tags = self.tags
            batch._groups = [(self.gcolls[0] if framing == FRAMING_COLLECTIONS else None, 0, n)]
            batch._ptags = self.ptags
            PyMem_Free(self.gids)
        else:
            # group by collection (first-seen order, push order within): a counting sort over group ids
            ng = len(self.gcolls)
            counts = <Py_ssize_t*>PyMem_Malloc((ng + 1) * sizeof(Py_ssize_t))
            order = <Py_ssize_t*>PyMem_Malloc((n + 1) * sizeof(Py_ssize_t))
            batch._offs = <Py_ssize_t*>PyMem_Malloc((n + 1) * sizeof(Py_ssize_t))
            batch._lens = <Py_ssize_t*>PyMem_Malloc((n + 1) * sizeof(Py_ssize_t))
            batch._ptags = <Py_ssize_t*>PyMem_Malloc((n + 1) * sizeof(Py_ssize_t))
            if (counts == NULL or order == NULL or batch._offs == NULL or batch._lens == NULL
                    or batch._ptags == NULL):
                PyMem_Free(counts)
                PyMem_Free(order)
                raise MemoryError()
            for g in range(ng + 1):
                counts[g] = 0
            for i in range(n):
                counts[self.gids[i] + 1] += 1
            for g in range(ng):
                counts[g + 1] += counts[g]
            for i in range(n):
                order[counts[self.gids[i]]] = i
                counts[self.gids[i]] += 1
            body = _Buf()
            body.reserve(self.nbytes)
            body.write_byte(b'{')
            colls = []
            tags = []
            groups = []
            j = 0
            for g in range(ng):
                if g:
                    body.write_byte(b',')
                name = <bytes>self.gnames[g]
                body.write(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
                body.write(b':[', 2)
                start = j
                while j < n and self.gids[order[j]] == g:
                    i = order[j]
                    if j != start:
                        body.write_byte(b',')
                    batch._offs[j] = body.len
                    batch._lens[j] = self.lens[i]
                    body.write(self.buf.data + self.offs[i], self.lens[i])
                    colls.append(self.colls[i])
                    if self.positional:
                        batch._ptags[j] = self.ptags[i]
                    else:
                        tags.append(self.tags[i])
                    j += 1
                body.write_byte(b']')
                groups.append((self.gcolls[g], start, j))
            body.write_byte(b'}')
            PyMem_Free(counts)
            PyMem_Free(order)
            batch._nbytes = body.len
            self.hint = self.buf.len
            batch._buf = body.take()
            batch._colls = colls
            batch._tags = tags
            batch._groups = groups
            PyMem_Free(self.offs)
            PyMem_Free(self.lens)
            PyMem_Free(self.gids)
            PyMem_Free(self.ptags)
        if batch._nbytes != self.nbytes:
            raise AssertionError("batch size bookkeeping is off")
        self.offs = NULL
        self.lens = NULL
        self.gids = NULL
        self.ptags = NULL
        self.cap = 0
        self.reset()
        return batch


cdef int _framing_code(str framing) except -1:
    if framing == "collections":
        return FRAMING_COLLECTIONS
    if framing == "events":
        return FRAMING_EVENTS
    if framing == "ndjson":
        return FRAMING_NDJSON
    if framing == "array":
        return FRAMING_ARRAY
    raise ValueError(f"unknown framing {framing!r}")


# ---------------------------------------------------------------------------------------------------------------
# Rules: fast checks in C; anything suspicious goes to the twin's functions, which raise the exact errors


cdef bint _top_reserved(dict event):
    # k.lower().startswith("tp_") / k.lower() == "_id", decided on the first three characters: no character
    # other than T/P/I/D lower-cases to t/p/i/d, and U+0130 lower-cases to two characters.
    cdef Py_ssize_t pos = 0, n
    cdef PyObject* k
    cdef PyObject* v
    cdef Py_UCS4 c0, c1, c2
    while PyDict_Next(event, &pos, &k, &v):
        if not PyUnicode_Check(<object>k):
            continue
        n = PyUnicode_GET_LENGTH(<object>k)
        if n < 3:
            continue
        c0 = PyUnicode_READ_CHAR(<object>k, 0)
        c1 = PyUnicode_READ_CHAR(<object>k, 1)
        c2 = PyUnicode_READ_CHAR(<object>k, 2)
        if (c0 == 't' or c0 == 'T') and (c1 == 'p' or c1 == 'P') and c2 == '_':
            return True
        if n == 3 and c0 == '_' and (c1 == 'i' or c1 == 'I') and (c2 == 'd' or c2 == 'D'):
            return True
    return False


cdef enum:
    SCAN_BAD_KEY = 1       # a key that breaks connect-python's elif chain
    SCAN_SLOW = 2          # NaN/Infinity, an aware datetime, a time, or nesting orjson refuses: the twin's path
    SCAN_NONSTR_KEY = 4    # a key that is not exactly str: orjson needs OPT_NON_STR_KEYS
    SCAN_NONASCII_TOP = 8  # a non-ASCII top-level key: _top_reserved decides tp_ / _id
    SCAN_DEEP = 16         # a container (dict, list or tuple) sits MAX_DEPTH deep: orjson must not see it
    SCAN_OBJECT = 32       # another object (a dataclass, an Enum …): the twin measures what orjson writes of it


cdef int _scan(object obj, int depth, bint keys) except -1:
    """One C walk over dicts, lists and tuples for the connect-python rules.

    ``keys``: still on the dict-through-dict chain that connect-python validates (lists are not entered for keys).
    PERF: this walk lets orjson format naive datetimes natively (equal to isoformat()) and makes a NaN scan of the
    output unnecessary.
    """
    cdef Py_ssize_t pos = 0, n, i
    cdef PyObject* k
    cdef PyObject* v
    cdef int flags = 0
    if depth >= MAX_DEPTH:
        return SCAN_SLOW | SCAN_DEEP
    if PyDict_Check(obj):
        while PyDict_Next(obj, &pos, &k, &v):
            if not PyUnicode_CheckExact(<object>k):
                flags |= SCAN_NONSTR_KEY
            if keys and PyUnicode_Check(<object>k):
                n = PyUnicode_GET_LENGTH(<object>k)
                if n > 255:
                    flags |= SCAN_BAD_KEY
                elif n:
                    if PyUnicode_IS_COMPACT_ASCII(<object>k):
                        # PERF: the usual key: look at its bytes directly; at the top level this also decides
                        # connect-python's tp_ / _id checks (k.lower() only changes ASCII letters here)
                        if _ascii_key_refused(<const char*>PyUnicode_DATA(<object>k), n, depth):
                            flags |= SCAN_BAD_KEY
                    elif PyUnicode_READ_CHAR(<object>k, 0) == '$' or PyUnicode_FindChar(<object>k, '.', 0, n, 1) >= 0:
                        flags |= SCAN_BAD_KEY
                    elif depth == 1:
                        flags |= SCAN_NONASCII_TOP
            flags |= _scan_value(<object>v, depth, keys)
        return flags
    if PyList_Check(obj):
        for i in range(PyList_GET_SIZE(obj)):
            flags |= _scan_value(<object>PyList_GET_ITEM(obj, i), depth, False)
    else:
        for i in range(PyTuple_GET_SIZE(obj)):
            flags |= _scan_value(<object>PyTuple_GET_ITEM(obj, i), depth, False)
    return flags


cdef inline bint _ascii_key_refused(const char* p, Py_ssize_t n, int depth) noexcept:
    """A non-empty ASCII key (n <= 255) that connect-python refuses: a leading '$' or a '.' anywhere, and at the top
    level (``depth`` 1) ``tp_…`` or ``_id`` in any case."""
    if p[0] == b'$' or _has_period(p, n):
        return True
    if depth == 1 and n >= 3:
        if (p[0] == b't' or p[0] == b'T') and (p[1] == b'p' or p[1] == b'P') and p[2] == b'_':
            return True
        if n == 3 and p[0] == b'_' and (p[1] == b'i' or p[1] == b'I') and (p[2] == b'd' or p[2] == b'D'):
            return True
    return False


cdef inline bint _has_period(const char* p, Py_ssize_t n) noexcept:
    # PERF: keys are short: a plain loop beats a libc memchr call below 32 bytes
    cdef Py_ssize_t i
    if n >= 32:
        return memchr(p, b'.', n) != NULL
    for i in range(n):
        if p[i] == b'.':
            return True
    return False


cdef inline int _scan_value(object v, int depth, bint keys) except -1:
    cdef double f
    if PyUnicode_CheckExact(v) or PyLong_CheckExact(v) or v is None or PyBool_Check(v):
        return 0
    if PyFloat_Check(v):
        f = PyFloat_AS_DOUBLE(v)
        return 0 if isfinite(f) else SCAN_SLOW
    if PyDict_Check(v):
        return _scan(v, depth + 1, keys)
    if PyList_Check(v) or PyTuple_Check(v):
        return _scan(v, depth + 1, False)
    if PyDateTime_CheckExact(v):
        # PERF: the exact type's tzinfo read from the struct (a subclass may override the attribute)
        return 0 if datetime_tzinfo(v) is None else SCAN_SLOW
    if PyDateTime_Check(v):
        # a subclass: the twin's path (isoformat(), as the twin writes it); reading its tzinfo could run Python
        # code that changes the dict this walk reads with borrowed references
        return SCAN_SLOW
    if PyTime_Check(v):
        return SCAN_SLOW  # orjson 3.x drops a zero of microseconds 10000..99999 in a time: isoformat() it is
    if _plain_object(v):
        return 0
    # a dataclass or an Enum holds what orjson writes without counting its tuples: the twin's walk looks inside
    return SCAN_SLOW | SCAN_OBJECT


cdef inline bint _plain_object(object v) noexcept:
    """A value that holds no container for orjson to write: str, int and float (subclasses too: orjson writes
    their value), None, dates and times, UUIDs. Anything else may be a dataclass or an Enum member, which orjson
    writes with what they hold."""
    return (PyUnicode_Check(v) or PyLong_Check(v) or PyFloat_Check(v) or v is None or PyDate_Check(v) or
            PyTime_Check(v) or type(v) is _UUID)


cdef bint _too_deep(object obj, int depth) noexcept:
    """The twin's ``_too_deep`` in C: whether ``obj`` (a dict, list or tuple, or a subclass, sitting ``depth`` deep)
    or a container inside it sits ``MAX_DEPTH`` deep, over their own storage (what orjson writes; orjson 3.13 does
    not count tuples); also ``True`` when it holds an object that is not ``_plain_object`` (maybe a dataclass or an
    Enum, whose insides the twin's walk measures: the caller hands the twin ``deep=None``). Runs no Python code."""
    cdef Py_ssize_t pos = 0, i
    cdef PyObject* k
    cdef PyObject* v
    if depth >= MAX_DEPTH:
        return True
    if PyDict_Check(obj):
        while PyDict_Next(obj, &pos, &k, &v):
            if _child_too_deep(<object>v, depth + 1):
                return True
    elif PyList_Check(obj):
        for i in range(PyList_GET_SIZE(obj)):
            if _child_too_deep(<object>PyList_GET_ITEM(obj, i), depth + 1):
                return True
    else:
        for i in range(PyTuple_GET_SIZE(obj)):
            if _child_too_deep(<object>PyTuple_GET_ITEM(obj, i), depth + 1):
                return True
    return False


cdef inline bint _child_too_deep(object v, int depth) noexcept:
    if PyDict_Check(v) or PyList_Check(v) or PyTuple_Check(v):
        return _too_deep(v, depth)
    return not _plain_object(v)


# ---------------------------------------------------------------------------------------------------------------
# The Connect writer: validation and JSON in one walk, byte-identical to orjson.dumps for what it accepts

cdef enum:
    KEYS_NONE = 0    # the writer's key checks: none,
    KEYS_CHAIN = 1   # connect-python's (the root dict and the dicts directly under it, recursively),
    KEYS_ALL = 2     # or every dict, inside lists too (the hub's)

cdef enum:
    W_OK = 0
    W_BAIL = 1   # something the writer does not do itself: the scan + orjson path decides (and raises)


cdef double[9] _P10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8]


cdef bint _w_short_decimal(_Buf out, double f) except -1:
    """PERF: the usual float of an event (``12.5``, ``1234.25``) without a dtoa call.

    Finds the fewest fractional digits k <= 8 for which an integer m gives exactly ``m / 10**k == f`` (IEEE
    division by an exact power of ten rounds correctly, as parsing the decimal would). Only where a double's spacing
    is below ``10**-k`` (so m is the one decimal with k digits that reads back as f) and ``1e-4 <= |f| < 1e15``
    (positional notation in repr and in orjson): then ``m`` with k fractional digits is the shortest round-trip
    repr. Returns False when it does not apply."""
    cdef double a = -f if f < 0 else f
    cdef double ulp, scaled
    cdef int e, k, i
    cdef long long m, ip, fp
    cdef char tmp[32]
    if not (1e-4 <= a < 1e15):
        return False
    frexp(a, &e)
    ulp = ldexp(1.0, e - 53)
    for k in range(9):
        if ulp * _P10[k] >= 1.0:
            return False  # from here on a multiple of 10**-k is not unique
        scaled = a * _P10[k]
        if scaled >= 9007199254740992.0:
            return False
        m = llround(scaled)
        if <double>m / _P10[k] == a:
            ip = m // <long long>_P10[k]
            fp = m - ip * <long long>_P10[k]
            if f < 0:
                out.write_byte(b'-')
            _write_ll(out, ip)
            if k == 0:
                out.write(b'.0', 2)
                return True
            # the fraction, zero-padded to k digits
            tmp[0] = b'.'
            for i in range(k, 0, -1):
                tmp[i] = <char>(48 + fp % 10)
                fp //= 10
            out.write(tmp, k + 1)
            return True
    return False


cdef int _w_float(_Buf out, double f) except -1:
    """``f`` as orjson writes it: Python's shortest repr, with orjson's exponent spelling (``1e-7`` for
    ``1e-07``; ``1.5e+16`` as is, or ``1.5e16`` with an orjson before 3.11.7) and positional digits for exponent -5
    (``0.000015`` for ``1.5e-05``)."""
    if _w_short_decimal(out, f):
        return 0
    cdef char* r = PyOS_double_to_string(f, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    cdef Py_ssize_t n, e, i
    cdef char* mant
    if r == NULL:
        raise MemoryError()
    try:
        n = strlen(r)
        e = -1
        for i in range(n):
            if r[i] == b'e':
                e = i
                break
        if e < 0:
            out.write(r, n)
            return 0
        if r[e + 1] == b'+':
            if _EXP_PLUS:
                out.write(r, n)
            else:
                out.write(r, e + 1)
                out.write(r + e + 2, n - e - 2)
            return 0
        # negative exponent: r is [-]D[.DDD]e-XX
        i = e + 2
        while r[i] == b'0':
            i += 1
        if n - i == 1 and r[i] == b'5':
            mant = r
            if mant[0] == b'-':
                out.write_byte(b'-')
                mant += 1
            out.write(b'0.0000', 6)
            while mant < r + e:
                if mant[0] != b'.':
                    out.write_byte(mant[0])
                mant += 1
        else:
            out.write(r, e + 2)
            out.write(r + i, n - i)
        return 0
    finally:
        PyMem_Free(r)


cdef int _w_datetime(_Buf out, object v) except -1:
    """A naive datetime as orjson writes it (``isoformat()``): microseconds only when non-zero."""
    cdef char tmp[32]
    cdef int n
    if datetime_year(v) < 1000:
        return W_BAIL  # rare: left to orjson's own formatting
    tmp[0] = b'"'
    n = _fmt_iso_naive(tmp + 1, datetime_year(v), datetime_month(v), datetime_day(v), datetime_hour(v),
                       datetime_minute(v), datetime_second(v), datetime_microsecond(v))
    tmp[n + 1] = b'"'
    out.write(tmp, n + 2)
    return W_OK


#: 2**63 as a double: orjson.loads gives an integer literal outside -2**63 .. 2**64-1 as a float at least this large
cdef double _TWO_63 = 9223372036854775808.0


cdef int _w_value(_Buf out, object v, int depth, int keys) except -1:
    cdef long long ll
    cdef int overflow = 0
    cdef double f
    cdef Py_ssize_t i, n
    if PyUnicode_CheckExact(v):
        return _write_json_str(out, v)  # 1 (W_BAIL): surrogates, which orjson refuses
    if PyLong_CheckExact(v):
        ll = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow:
            return W_BAIL
        _write_ll(out, ll)
        return W_OK
    if v is None:
        out.write(b'null', 4)
        return W_OK
    if v is True:
        out.write(b'true', 4)
        return W_OK
    if v is False:
        out.write(b'false', 5)
        return W_OK
    if PyFloat_CheckExact(v):
        f = PyFloat_AS_DOUBLE(v)
        if not isfinite(f):
            return W_BAIL
        if keys == KEYS_ALL and not -_TWO_63 < f < _TWO_63:
            # the hub: orjson.loads turns an integer beyond 64 bits into such a float; its exact path looks
            return W_BAIL
        return _w_float(out, f)
    if PyDict_CheckExact(v):
        return _w_dict(out, v, depth + 1, keys)
    if PyList_CheckExact(v) or PyTuple_CheckExact(v):
        if depth + 1 >= MAX_DEPTH:
            return W_BAIL
        # a list or a tuple: PySequence_Fast_* read both without a copy
        n = PySequence_Fast_GET_SIZE(v)
        out.write_byte(b'[')
        for i in range(n):
            if i:
                out.write_byte(b',')
            if _w_value(out, <object>PySequence_Fast_GET_ITEM(v, i), depth + 1,
                        KEYS_ALL if keys == KEYS_ALL else KEYS_NONE):
                return W_BAIL
        out.write_byte(b']')
        return W_OK
    if PyDateTime_CheckExact(v) and datetime_tzinfo(v) is None:
        return _w_datetime(out, v)
    return W_BAIL


# PERF: the keys of a program's events are a few str objects used again and again (literals, interned), so the
# writer remembers, per key object, its JSON text ``,"key":`` and whether connect-python's rules refuse it at the top
# level and below. Direct-mapped by address; a slot holds a reference to its key, so an address in the table is
# always that very (immutable) str. Only touched with the GIL held.
cdef enum:
    KC_SLOTS = 512
    KC_TEXT = 48      # ',"' + at most 44 key bytes + '":'
    KC_TOP_OK = 1     # not refused at depth 1
    KC_NESTED_OK = 2  # not refused below


cdef PyObject* _kc_key[KC_SLOTS]
cdef unsigned char _kc_ok[KC_SLOTS]
cdef unsigned char _kc_len[KC_SLOTS]
cdef char _kc_text[KC_SLOTS][KC_TEXT]


cdef inline size_t _kc_slot(PyObject* k) noexcept:
    return (<size_t>k >> 4) & (KC_SLOTS - 1)


cdef void _kc_store(PyObject* k) noexcept:
    """Remember a key the writer has just checked and written: exact, compact ASCII, 1 to 44 bytes, no escapes."""
    cdef size_t slot = _kc_slot(k)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(<object>k), i
    cdef const unsigned char* p = <const unsigned char*>PyUnicode_DATA(<object>k)
    cdef PyObject* old
    if n < 1 or n > KC_TEXT - 4:
        return
    for i in range(n):
        if _ESC[p[i]]:
            return
    old = _kc_key[slot]
    Py_INCREF(<object>k)
    _kc_key[slot] = k
    _kc_ok[slot] = ((0 if _ascii_key_refused(<const char*>p, n, 1) else KC_TOP_OK)
                    | (0 if _ascii_key_refused(<const char*>p, n, 2) else KC_NESTED_OK))
    _kc_text[slot][0] = b','
    _kc_text[slot][1] = b'"'
    memcpy(&_kc_text[slot][2], p, n)
    _kc_text[slot][n + 2] = b'"'
    _kc_text[slot][n + 3] = b':'
    _kc_len[slot] = <unsigned char>(n + 4)
    Py_XDECREF(old)  # last: a str's deallocation runs no Python code, and the slot is already consistent


cdef int _w_dict(_Buf out, object d, int depth, int keys) except -1:
    """A dict with exact-str keys. ``keys``: ``KEYS_CHAIN`` on the chain that connect-python validates (as
    ``_scan``), ``KEYS_ALL`` in every dict, lists included (the hub's rules); there any key that might be refused
    sends the event to the caller's exact path, which says what is wrong."""
    cdef Py_ssize_t pos = 0, n
    cdef PyObject* k
    cdef PyObject* v
    cdef Py_ssize_t start = out.len
    cdef size_t slot
    if depth >= MAX_DEPTH:
        return W_BAIL
    # every key is written with a ',' before it; the first one becomes the opening brace at the end
    while PyDict_Next(d, &pos, &k, &v):
        slot = _kc_slot(k)
        if _kc_key[slot] == k:
            # PERF: a key seen before: its checks and its text are remembered
            if keys and not (_kc_ok[slot] & (KC_TOP_OK if depth == 1 else KC_NESTED_OK)):
                return W_BAIL
            out.write(_kc_text[slot], _kc_len[slot])
        else:
            if not PyUnicode_CheckExact(<object>k):
                return W_BAIL
            if keys:
                n = PyUnicode_GET_LENGTH(<object>k)
                if n:
                    if not PyUnicode_IS_COMPACT_ASCII(<object>k):
                        return W_BAIL  # rare: a non-ASCII key on the checked chain
                    if n > 255 or _ascii_key_refused(<const char*>PyUnicode_DATA(<object>k), n, depth):
                        return W_BAIL
            out.write_byte(b',')
            if _write_json_str(out, <object>k):
                return W_BAIL
            out.write_byte(b':')
            if PyUnicode_IS_COMPACT_ASCII(<object>k):
                _kc_store(k)
        if _w_value(out, <object>v, depth, keys):
            return W_BAIL
    if out.len == start:
        out.write(b'{}', 2)
    else:
        out.data[start] = b'{'
        out.write_byte(b'}')
    return W_OK


cdef inline bint _digit(unsigned char c) noexcept:
    return b'0' <= c <= b'9'


cdef inline bint _two(const unsigned char* p, char hi_max, char lo_max_at_hi_max) noexcept:
    """Two digits ``p[0]p[1]`` with ``p[0] <= hi_max``, and ``p[1] <= lo_max_at_hi_max`` when ``p[0] == hi_max``."""
    return (_digit(p[0]) and _digit(p[1]) and p[0] <= hi_max
            and (p[0] < hi_max or p[1] <= lo_max_at_hi_max))


cdef inline bint _leap(const unsigned char* p) noexcept:
    cdef int y = (p[0] - 48) * 1000 + (p[1] - 48) * 100 + (p[2] - 48) * 10 + (p[3] - 48)
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


cdef bint _real_day(const unsigned char* p) noexcept:
    """The day of ``YYYY-MM-DD`` (digits checked) exists in its month (proleptic Gregorian leap years)."""
    cdef int d = (p[8] - 48) * 10 + (p[9] - 48)
    cdef int m
    if d <= 28:
        return True
    m = (p[5] - 48) * 10 + (p[6] - 48)
    if d <= 30:
        return m != 2 or (d == 29 and _leap(p))
    return m == 1 or m == 3 or m == 5 or m == 7 or m == 8 or m == 10 or m == 12


cdef bint _hub_timestamp_ok(const unsigned char* p, Py_ssize_t n) noexcept:
    """The hub's ISO-8601 rule (``eventpush.hub.connect._TIMESTAMP``) on ASCII text::

        YYYY-MM-DDTHH:MM[:SS[.fraction of 1 to 9 digits]][Z | +HH:MM | +HHMM | -…]

    month 01-12, day 01-31 and existing in that month, hour 00-23, minute 00-59, second 00-60, offset hours 00-23."""
    cdef Py_ssize_t i, k
    if n < 16:
        return False
    if not (_digit(p[0]) and _digit(p[1]) and _digit(p[2]) and _digit(p[3]) and p[4] == b'-' and p[7] == b'-'
            and p[10] == b'T' and p[13] == b':'):
        return False
    if not ((p[5] == b'0' and b'1' <= p[6] <= b'9') or (p[5] == b'1' and b'0' <= p[6] <= b'2')):
        return False
    if not ((p[8] == b'0' and b'1' <= p[9] <= b'9') or ((p[8] == b'1' or p[8] == b'2') and _digit(p[9]))
            or (p[8] == b'3' and (p[9] == b'0' or p[9] == b'1'))):
        return False
    if not (_two(p + 11, b'2', b'3') and _two(p + 14, b'5', b'9')):
        return False
    if not _real_day(p):
        return False
    i = 16
    if i < n and p[i] == b':':
        if i + 3 > n or not (_two(p + i + 1, b'5', b'9') or (p[i + 1] == b'6' and p[i + 2] == b'0')):
            return False
        i += 3
        if i < n and p[i] == b'.':
            k = 0
            while i + 1 + k < n and _digit(p[i + 1 + k]):
                k += 1
            if k < 1 or k > 9:
                return False
            i += 1 + k
    if i == n:
        return True
    if p[i] == b'Z':
        return i + 1 == n
    if p[i] != b'+' and p[i] != b'-':
        return False
    if i + 3 > n or not _two(p + i + 1, b'2', b'3'):
        return False
    i += 3
    if i < n and p[i] == b':':
        i += 1
    return i + 2 == n and _two(p + i, b'5', b'9')


cdef inline bint _hub_timestamp_str_ok(object text) noexcept:
    """``_hub_timestamp_ok`` on a str (only ASCII text can match)."""
    return PyUnicode_IS_COMPACT_ASCII(text) and _hub_timestamp_ok(
        <const unsigned char*>PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text))


def hub_timestamp_ok(text):
    """``True`` when ``text`` is a timestamp the hub accepts (for the differential tests)."""
    if PyUnicode_CheckExact(text):
        return _hub_timestamp_str_ok(text)
    return _py.hub_timestamp_ok(text)  # a str subclass (its characters), or the twin's error for a non-str


def hub_connect_bulk(events, max_event_bytes):
    """The hub's bulk path for one collection of a Connect batch (see ``_core.pyi``): ``(ids, bodies)`` when every
    event is a dict with a valid string ``id`` (unique in ``events``) and ISO ``timestamp``, no key the hub might
    refuse at any depth, at most ``max_event_bytes`` once written; ``None`` (the caller's exact path decides)
    otherwise. ``bodies[i]`` is ``orjson.dumps(events[i])``, byte for byte."""
    cdef Py_ssize_t ln, limit = 0
    cdef object ev, eid, ts
    cdef list ids = [], bodies = []
    cdef _Buf out = _Buf()
    cdef int overflow = 0
    cdef long long ll
    cdef bint exact_limit = PyLong_CheckExact(max_event_bytes)
    if exact_limit:
        # any int: beyond the C range every body fits (or none does), as the twin's comparison says
        ll = PyLong_AsLongLongAndOverflow(max_event_bytes, &overflow)
        limit = (PY_SSIZE_T_MAX if overflow > 0 else -1 if overflow < 0 or ll < -1 else
                 <Py_ssize_t>ll if ll <= PY_SSIZE_T_MAX else PY_SSIZE_T_MAX)
    # any iterable, read as the twin reads it (a list by index, re-checking its length: user code may run)
    for ev in events:
        if not PyDict_CheckExact(ev):
            return None
        eid = (<dict>ev).get(_K_ID)
        if not PyUnicode_CheckExact(eid):
            return None
        ln = PyUnicode_GET_LENGTH(eid)
        if ln < 1 or ln > 255 or PyUnicode_FindChar(eid, 0, 0, ln, 1) >= 0:
            return None
        ts = (<dict>ev).get(_K_TIMESTAMP)
        if not PyUnicode_CheckExact(ts) or not _hub_timestamp_str_ok(ts):
            return None
        out.len = 0
        if _w_dict(out, ev, 1, KEYS_ALL) != W_OK:
            return None
        if (out.len > limit) if exact_limit else (out.len > max_event_bytes):
            return None
        ids.append(eid)
        bodies.append(PyBytes_FromStringAndSize(out.data, out.len))
    if len(set(ids)) != len(ids):
        return None
    return ids, bodies


def hub_id_hashes(key, cid, ids):
    """The hub's keyed id hashes (see ``_core.pyi``): for each id of the list ``ids``, SipHash-2-4 under the
    16-byte ``key`` of ``cid`` (8 bytes, little-endian two's complement) followed by the id's UTF-8 bytes, as a
    signed 64-bit int."""
    cdef const unsigned char* k
    cdef unsigned char prefix[8]
    cdef long long c
    cdef Py_ssize_t i, n, count
    cdef const char* data
    cdef const char** datas
    cdef Py_ssize_t* sizes
    cdef uint64_t* hashes
    cdef tuple held
    cdef object eid
    if not PyBytes_CheckExact(key) or PyBytes_GET_SIZE(key) != 16:
        raise ValueError("the id hash key must be 16 bytes")
    if not PyList_CheckExact(ids):
        raise TypeError("ids must be a list")
    c = cid  # an int beyond 64 bits raises OverflowError, as the twin does
    for i in range(8):
        prefix[i] = <unsigned char>((<unsigned long long>c) >> (8 * i))
    k = <const unsigned char*>PyBytes_AS_STRING(key)
    held = tuple(ids)  # each id's text stays alive (and unchanged: a str is immutable) while the GIL is let go
    count = len(held)
    datas = <const char**>PyMem_Malloc(count * sizeof(char*) + 1)
    sizes = <Py_ssize_t*>PyMem_Malloc(count * sizeof(Py_ssize_t) + 1)
    hashes = <uint64_t*>PyMem_Malloc(count * sizeof(uint64_t) + 1)
    try:
        if datas == NULL or sizes == NULL or hashes == NULL:
            raise MemoryError()
        for i in range(count):
            eid = <object>PyTuple_GET_ITEM(held, i)
            if not PyUnicode_CheckExact(eid):
                raise TypeError(f"an event id must be a str, not {type(eid).__name__}")
            if PyUnicode_IS_COMPACT_ASCII(eid):
                data = <const char*>PyUnicode_DATA(eid)
                n = PyUnicode_GET_LENGTH(eid)
            else:
                data = PyUnicode_AsUTF8AndSize(eid, &n)  # cached in the str: valid as long as it lives
                if data == NULL:  # a lone surrogate
                    PyErr_Clear()
                    eid.encode()  # raises the twin's UnicodeEncodeError
                    raise UnicodeEncodeError("utf-8", eid, 0, 1, "surrogates not allowed")
            datas[i] = data
            sizes[i] = n
        # PERF: a request's 5,000 ids take ~0.6 ms; the hub's writer thread may want the GIL meanwhile
        with nogil:
            for i in range(count):
                hashes[i] = ep_siphash24(k, prefix, <const unsigned char*>datas[i], <size_t>sizes[i])
        return [<long long>hashes[i] for i in range(count)]
    finally:
        PyMem_Free(datas)
        PyMem_Free(sizes)
        PyMem_Free(hashes)


cdef extern from "stdlib.h":
    void qsort(void* base, size_t nmemb, size_t size, int (*compar)(const void*, const void*) noexcept nogil) nogil


cdef int _cmp_u64(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0], y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)


def hub_index_keys(hashes, shift, bits):
    """The hub's index keys of ``hashes`` (see ``_core.pyi``): ``(h >> shift) & (2**bits - 1)`` for each, in
    ascending order, as the text of a JSON array."""
    cdef Py_ssize_t i, n
    cdef int sh, nb
    cdef uint64_t mask
    cdef uint64_t* keys
    cdef long long ll
    cdef int overflow = 0
    cdef _Buf out
    cdef object h
    if not PyList_CheckExact(hashes):
        raise TypeError("hashes must be a list")
    sh = shift
    nb = bits
    if not (0 <= sh and 1 <= nb <= 63 and sh + nb <= 64):
        raise ValueError("shift and bits must select 1 to 63 bits of a 64-bit hash")
    mask = (<uint64_t>1 << nb) - 1
    n = PyList_GET_SIZE(hashes)
    keys = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t) if n else 1)
    if keys == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            h = <object>PyList_GET_ITEM(hashes, i)
            if not PyLong_CheckExact(h):
                raise TypeError(f"a hash must be an int, not {type(h).__name__}")
            ll = PyLong_AsLongLongAndOverflow(h, &overflow)
            if overflow:
                raise OverflowError("a hash must be a signed 64-bit int")
            # within 64 - shift bits, a logical shift selects what Python's arithmetic one does
            keys[i] = (<uint64_t>ll >> sh) & mask
        with nogil:  # PERF: the hub's writer thread may want the GIL meanwhile
            qsort(keys, n, sizeof(uint64_t), _cmp_u64)
        out = _Buf()
        out.write_byte(b'[')
        for i in range(n):
            if i:
                out.write_byte(b',')
            _write_ll(out, <long long>keys[i])
        out.write_byte(b']')
        return _ascii(out.data, out.len)
    finally:
        PyMem_Free(keys)


# ---------------------------------------------------------------------------------------------------------------
# The hub's key filter: a split-block Bloom filter over its index keys (the pure twin has the same bits)

cdef enum:
    KF_FIRST_CAPACITY = 1 << 20  # keys the first table is sized for; each next one twice the last
    KF_BITS_PER_KEY = 16         # at capacity: about 0.1% false positives per table


_KF_BAD = "not a JSON array of index keys (non-negative ints)"


cdef inline uint64_t _kf_mix(uint64_t x) noexcept nogil:
    # splitmix64's finalizer
    x ^= x >> 30
    x *= <uint64_t>0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= <uint64_t>0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef inline uint64_t _kf_bits(uint64_t m) noexcept nogil:
    """A key's bit in each word of its block (6 bits each), from its mix ``m`` (whose low bits pick the block)."""
    return _kf_mix(m ^ <uint64_t>0x9e3779b97f4a7c15ULL)


cdef inline uint64_t* _kf_block(bytearray t, uint64_t m):
    """The block of table ``t`` (8-word blocks, a power of two of them) that the key of mix ``m`` sets."""
    return <uint64_t*>(<char*>t) + ((m & ((<uint64_t>len(t) >> 6) - 1)) << 3)


cdef inline const char* _kf_key(const char* p, const char* end, uint64_t* key) except NULL:
    """Read one key (decimal digits) at ``p``; returns the position after it."""
    cdef const char* q = p
    cdef uint64_t v = 0
    while q < end and b'0' <= q[0] <= b'9':
        if q - p >= 18:
            raise ValueError("an index key must be an int from 0 to 10**18 - 1")
        v = v * 10 + <uint64_t>(q[0] - 48)  # '0'
        q += 1
    if q == p:
        raise ValueError(_KF_BAD)
    key[0] = v
    return q


cdef inline const char* _kf_open(object keys_json, const char** end) except NULL:
    """The UTF-8 text of ``keys_json`` (cached in the str) at its '['; ``end`` past its last byte, a ']'."""
    cdef Py_ssize_t n
    cdef const char* p
    if not PyUnicode_CheckExact(keys_json):
        raise TypeError("keys_json must be a str")
    p = PyUnicode_AsUTF8AndSize(keys_json, &n)
    end[0] = p + n
    if n == 0 or p[0] != b'[' or p[n - 1] != b']':
        raise ValueError(_KF_BAD)
    return p


cdef inline const char* _kf_next(const char* p, const char* end) except NULL:
    if p < end and p[0] == b',' and p + 1 < end and p[1] != b']':
        return p + 1
    if p < end and p[0] == b']' and p + 1 == end:
        return p
    raise ValueError(_KF_BAD)


cdef inline int _kf_close(const char* p, const char* end) except -1:
    if p + 1 != end:
        raise ValueError(_KF_BAD)
    return 0


cdef class _KfParts:
    """A JSON array of index keys cut in two, key by key in the order given (``put``): the keys ``picked`` and the
    ``rest``, which stays the array's text itself until the first key is picked, and is copied then."""
    cdef object text
    cdef const char* start  # the text's '[' (its UTF-8, cached in the str this object holds)
    cdef _Buf rest
    cdef _Buf picked

    cdef int put(self, const char* p, const char* q, bint pick) except -1:
        """The key between ``p`` and ``q`` (a position in the text) into ``picked`` or into ``rest``."""
        cdef _Buf out
        if pick:
            if self.picked is None:  # the keys before this one were all rest: the text up to here
                self.picked = _Buf()
                self.picked.write_byte(b'[')
                self.rest = _Buf()
                self.rest.write(self.start, p - self.start)
                if self.rest.len > 1:
                    self.rest.len -= 1  # the ',' before this key
            out = self.picked
        else:
            out = self.rest
        if out is not None:
            if out.len > 1:
                out.write_byte(b',')
            out.write(p, q - p)
        return 0

    cdef tuple result(self):
        """``(rest, picked)``, each a JSON array; ``(text, "[]")``, the same str, when no key was picked."""
        if self.picked is None:
            return self.text, "[]"
        self.rest.write_byte(b']')
        self.picked.write_byte(b']')
        return _ascii(self.rest.data, self.rest.len), _ascii(self.picked.data, self.picked.len)


cdef inline _KfParts _kf_parts(object keys_json, const char** end):
    """``_kf_open`` for a cut of ``keys_json`` in two (``_KfParts``)."""
    cdef _KfParts parts = _KfParts.__new__(_KfParts)
    parts.start = _kf_open(keys_json, end)
    parts.text = keys_json
    return parts


cdef class HubKeyFilter:
    """The keys the hub's writer put in its index, for a look in memory before the look in SQLite: a key the
    filter never saw is surely not there. A split-block Bloom filter (one 64-byte block per key, a bit in each
    of its eight words); a chain of tables, each twice the size of the last, so that it grows without the keys
    it holds. See ``_core.pyi``."""
    cdef list _tables      # bytearrays of 8-word blocks
    cdef list _capacity    # keys each table is sized for
    cdef readonly long long keys
    cdef long long _in_last  # keys added to the last table

    def __init__(self, first_capacity=KF_FIRST_CAPACITY):
        cdef long long cap = first_capacity
        if cap < 32 or cap & (cap - 1):
            raise ValueError("first_capacity must be a power of two, at least 32")
        self._tables = []
        self._capacity = []
        self.keys = 0
        self._grow(cap)

    cdef int _grow(self, long long cap) except -1:
        self._tables.append(bytearray(cap * KF_BITS_PER_KEY // 8))
        self._capacity.append(cap)
        self._in_last = 0
        return 0

    @property
    def tables(self):
        return len(self._tables)

    @property
    def nbytes(self):
        return sum(len(t) for t in self._tables)

    cdef int _maybe(self, uint64_t key) except -1:
        cdef uint64_t m = _kf_mix(key)
        cdef uint64_t bits = _kf_bits(m)
        cdef uint64_t* block
        cdef int i
        cdef bytearray t
        for t in self._tables:
            block = _kf_block(t, m)
            for i in range(8):
                if not (block[i] >> ((bits >> (6 * i)) & 63)) & 1:
                    break
            else:
                return 1
        return 0

    cdef int _set(self, uint64_t key) except -1:
        cdef uint64_t m = _kf_mix(key)
        cdef uint64_t bits = _kf_bits(m)
        cdef uint64_t* block
        cdef int i
        if self._in_last >= <long long>self._capacity[len(self._capacity) - 1]:
            self._grow(2 * <long long>self._capacity[len(self._capacity) - 1])
        block = _kf_block(self._tables[len(self._tables) - 1], m)
        for i in range(8):
            block[i] |= <uint64_t>1 << ((bits >> (6 * i)) & 63)
        self._in_last += 1
        self.keys += 1
        return 0

    def __contains__(self, key):
        if not PyLong_CheckExact(key) or key < 0 or key >= 10 ** 18:
            return False
        return self._maybe(<uint64_t>key)

    def add(self, keys_json):
        """Add every key of ``keys_json`` (a JSON array of ints from 0 to 10**18 - 1, as ``hub_index_keys``
        writes it); returns the last key, or -1 when there is none."""
        cdef const char* end
        cdef const char* p = _kf_open(keys_json, &end) + 1
        cdef uint64_t key
        cdef long long last = -1
        while p < end and p[0] != b']':
            p = _kf_key(p, end, &key)
            p = _kf_next(p, end)
            self._set(key)
            last = <long long>key
        _kf_close(p, end)
        return last

    def split(self, keys_json):
        """``(new, maybe)``: the keys of ``keys_json`` this filter surely never saw and the others, each a JSON
        array in the order given; ``(keys_json, "[]")`` itself when it never saw any."""
        return self._split(keys_json, False)

    def split_add(self, keys_json):
        """``split`` and ``add`` in one pass: each key is looked at, then added (one look at its block)."""
        return self._split(keys_json, True)

    cdef tuple _split(self, object keys_json, bint add):
        cdef const char* end
        cdef _KfParts parts = _kf_parts(keys_json, &end)
        cdef const char* p = parts.start + 1
        cdef const char* q
        cdef uint64_t key
        while p < end and p[0] != b']':
            q = _kf_key(p, end, &key)
            parts.put(p, q, self._maybe(key))  # picked: maybe
            p = _kf_next(q, end)
            if add:
                self._set(key)
        _kf_close(p, end)
        return parts.result()


cdef enum:
    KL_FIRST_SLOTS = 1 << 17  # twice the keys one move of the hub's key log takes (_MERGE_AT), rounded up


cdef class HubKeyLog:
    """The keys of the hub's key log and the rid of the chunk that logged each: an exact hash map of index keys
    (open addressing, linear probing; a slot holds key + 1, 0 when empty) that ``clear`` empties without giving
    back its table. See ``_core.pyi``."""
    cdef uint64_t* _slots
    cdef int64_t* _refs
    cdef Py_ssize_t _mask
    cdef Py_ssize_t _size

    def __cinit__(self):
        self._slots = NULL
        self._refs = NULL
        self._alloc(KL_FIRST_SLOTS)

    def __dealloc__(self):
        PyMem_Free(self._slots)
        PyMem_Free(self._refs)

    cdef int _alloc(self, Py_ssize_t n) except -1:
        cdef uint64_t* slots = <uint64_t*>PyMem_Calloc(n, sizeof(uint64_t))
        cdef int64_t* refs = <int64_t*>PyMem_Malloc(n * sizeof(int64_t))
        if slots == NULL or refs == NULL:
            PyMem_Free(slots)
            PyMem_Free(refs)
            raise MemoryError()
        PyMem_Free(self._slots)
        PyMem_Free(self._refs)
        self._slots = slots
        self._refs = refs
        self._mask = n - 1
        self._size = 0
        return 0

    cdef inline Py_ssize_t _find(self, uint64_t key) noexcept:
        """The slot holding ``key``, or the empty one where it would go."""
        cdef Py_ssize_t i = <Py_ssize_t>(_kf_mix(key) & <uint64_t>self._mask)
        while self._slots[i] != 0 and self._slots[i] != key + 1:
            i = (i + 1) & self._mask
        return i

    cdef int _put(self, uint64_t key, int64_t ref) except -1:
        """Add ``key`` unless held; returns 1 when added."""
        cdef uint64_t* old_slots
        cdef int64_t* old_refs
        cdef Py_ssize_t i, n
        if (self._size + 1) * 2 > self._mask + 1:  # at most half full: short probes
            old_slots, old_refs, n = self._slots, self._refs, self._mask + 1
            self._slots = self._refs = NULL
            try:
                self._alloc(2 * n)
            except MemoryError:
                self._slots, self._refs, self._mask = old_slots, old_refs, n - 1
                raise
            for i in range(n):
                if old_slots[i] != 0:
                    self._put(old_slots[i] - 1, old_refs[i])
            PyMem_Free(old_slots)
            PyMem_Free(old_refs)
        i = self._find(key)
        if self._slots[i] != 0:
            return 0
        self._slots[i] = key + 1
        self._refs[i] = ref
        self._size += 1
        return 1

    def __len__(self):
        return self._size

    def __contains__(self, key):
        return self.get(key) is not None

    def get(self, key):
        cdef Py_ssize_t i
        if not PyLong_CheckExact(key) or key < 0 or key >= 10 ** 18:
            return None
        i = self._find(<uint64_t>key)
        return self._refs[i] if self._slots[i] != 0 else None

    def add(self, keys_json, ref):
        """Map each key of ``keys_json`` not held yet to ``ref``; returns how many were added."""
        if not PyLong_CheckExact(ref):
            raise TypeError("ref must be an int")
        if ref < 0 or ref >= 2 ** 63:
            raise ValueError("ref must be from 0 to 2**63 - 1")
        cdef const char* end
        cdef const char* p = _kf_open(keys_json, &end) + 1
        cdef uint64_t key
        cdef Py_ssize_t added = 0
        while p < end and p[0] != b']':
            p = _kf_key(p, end, &key)
            p = _kf_next(p, end)
            added += self._put(key, <int64_t>ref)
        _kf_close(p, end)
        return added

    def absent(self, keys_json):
        """The keys of ``keys_json`` not held, a JSON array in the order given (``keys_json`` itself when none
        is held)."""
        cdef const char* end
        cdef _KfParts parts = _kf_parts(keys_json, &end)
        cdef const char* p = parts.start + 1
        cdef const char* q
        cdef uint64_t key
        while p < end and p[0] != b']':
            q = _kf_key(p, end, &key)
            parts.put(p, q, self._slots[self._find(key)] != 0)  # picked: held
            p = _kf_next(q, end)
        _kf_close(p, end)
        return parts.result()[0]

    def clear(self):
        memset(self._slots, 0, (self._mask + 1) * sizeof(uint64_t))
        self._size = 0


# ---------------------------------------------------------------------------------------------------------------
# The hub's scan of a whole Connect batch body: the bulk path's result straight from the bytes, no objects built

cdef enum:
    SC_MAX_LEVEL = 32    # containers nested this deep or deeper are declined (the parse path takes them)
    SC_MAX_KEYS = 64     # an object with more members is declined (its names are compared pairwise)
    SC_MAX_NUMBER = 40   # a longer number literal is declined
    SC_YIELD_EVERY = 64  # the GIL is let go after each this many events (a power of two)

cdef double[16] _SC_P10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15]

cdef unsigned char _SC[256]  # a string's bytes: 0 plain ASCII, 1 '"', 2 declined (controls, '\\', no UTF-8), 3 lead
for _c in range(256):
    _SC[_c] = (1 if _c == 34 else 2 if _c < 0x20 or _c == 92 else 0 if _c < 0x80
               else 3 if 0xC2 <= _c <= 0xF4 else 2)


cdef struct _ScEvent:
    Py_ssize_t id_at      # the root "id" string's contents: first byte (-1: none yet), end, code points
    Py_ssize_t id_end
    Py_ssize_t id_chars
    Py_ssize_t ts_at      # the root "timestamp" string's contents: first byte (-1: none yet), end
    Py_ssize_t ts_end
    Py_ssize_t ts_chars
    int max_level


cdef inline bint _cont(unsigned char c) noexcept:
    return 0x80 <= c <= 0xBF


cdef Py_ssize_t _sc_string(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, Py_ssize_t* chars) noexcept:
    """From just after an opening quote: the index just after the closing quote, or -1 for a string orjson would
    not write back byte for byte or that is not valid UTF-8 (an escape, a control character, a surrogate, an
    overlong form, the end of the body). ``chars[0]``: its code points."""
    cdef Py_ssize_t start = i, extra = 0
    cdef uint64_t word
    cdef unsigned char c, k, c1
    while True:
        # PERF: eight bytes at a time while they are plain ASCII
        while i + 8 <= n:
            memcpy(&word, p + i, 8)
            if (word & 0x8080808080808080ULL) or _needs_escape8(word):
                break
            i += 8
        if i >= n:
            return -1
        c = p[i]
        k = _SC[c]
        if k == 0:
            i += 1
        elif k == 1:
            chars[0] = i - start - extra
            return i + 1
        elif k == 2:
            return -1
        else:  # a UTF-8 lead byte: its continuation bytes, no overlong form, no surrogate, at most U+10FFFF
            c1 = p[i + 1]  # the body's bytes end with a NUL (bytes objects do): reading one past the end is safe
            if c < 0xE0:
                if not _cont(c1):
                    return -1
                i += 2
                extra += 1
            elif c < 0xF0:
                if (not _cont(c1) or (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F)
                        or i + 2 >= n or not _cont(p[i + 2])):
                    return -1
                i += 3
                extra += 2
            else:
                if (not _cont(c1) or (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F)
                        or i + 3 >= n or not _cont(p[i + 2]) or not _cont(p[i + 3])):
                    return -1
                i += 4
                extra += 3


cdef Py_ssize_t _sc_number(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, _Buf tmp) except -2:
    """From a number's first byte: the index after it, or -1 unless orjson reads it as a value the bulk path
    takes and writes it back byte for byte (an integer of at most 18 digits other than ``-0``; a float whose
    shortest form, in orjson's spelling, is the literal itself)."""
    cdef Py_ssize_t s = i, digits, dot = -1, j
    cdef bint neg = p[i] == b'-', fraction = False, exponent = False
    cdef char lit[SC_MAX_NUMBER + 1]
    cdef double f
    cdef long long m
    if neg:
        i += 1
    if p[i] == b'0':
        i += 1
    elif _digit(p[i]):
        while i < n and _digit(p[i]):
            i += 1
    else:
        return -1
    digits = i - s - neg
    if p[i] == b'.':
        fraction = True
        dot = i
        i += 1
        if not _digit(p[i]):
            return -1
        while i < n and _digit(p[i]):
            i += 1
    if p[i] == b'e' or p[i] == b'E':
        fraction = exponent = True
        i += 1
        if p[i] == b'+' or p[i] == b'-':
            i += 1
        if not _digit(p[i]):
            return -1
        while i < n and _digit(p[i]):
            i += 1
    if not fraction:
        # orjson.loads gives an int (-0 reads as 0); 18 digits stay below 2**63, where the bulk path writes them
        return -1 if digits > 18 or (neg and p[s + 1] == b'0') else i
    if i - s > SC_MAX_NUMBER:
        return -1
    memcpy(lit, p + s, i - s)
    lit[i - s] = 0
    if not exponent and i - s - neg <= 16:
        # PERF: at most 15 digits (and the point): their integer m is exact in a double, and so is 10**k, so the
        # one correctly rounded division gives the double the decimal reads as (no dtoa call)
        m = 0
        for j in range(s + neg, i):
            if p[j] != b'.':
                m = m * 10 + (p[j] - 48)
        f = <double>m / _SC_P10[i - 1 - dot]
        if neg:
            f = -f
    else:
        f = PyOS_string_to_double(lit, NULL, NULL)  # correctly rounded, as orjson.loads reads it
    if not isfinite(f) or not -_TWO_63 < f < _TWO_63:
        return -1
    tmp.len = 0
    _w_float(tmp, f)  # what the bulk path writes for it
    if tmp.len != i - s or memcmp(tmp.data, lit, i - s) != 0:
        return -1
    return i


cdef Py_ssize_t _sc_value(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, int level, _ScEvent* ev,
                          _Buf tmp) except -2:
    """A value of a container at ``level``: the index after it, or -1 (declined)."""
    cdef unsigned char c = p[i]
    cdef Py_ssize_t chars
    if c == b'"':
        return _sc_string(p, i + 1, n, &chars)
    if c == b'{':
        return _sc_object(p, i, n, level + 1, ev, tmp)
    if c == b'[':
        return _sc_array(p, i, n, level + 1, ev, tmp)
    if c == b'-' or _digit(c):
        return _sc_number(p, i, n, tmp)
    if c == b't':
        return i + 4 if i + 4 <= n and memcmp(p + i, b"true", 4) == 0 else -1
    if c == b'f':
        return i + 5 if i + 5 <= n and memcmp(p + i, b"false", 5) == 0 else -1
    if c == b'n':
        return i + 4 if i + 4 <= n and memcmp(p + i, b"null", 4) == 0 else -1
    return -1


cdef Py_ssize_t _sc_array(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, int level, _ScEvent* ev,
                          _Buf tmp) except -2:
    """An array at ``level`` from its '[': the index after its ']', or -1 (declined)."""
    if level >= ev.max_level:
        return -1
    i += 1
    if p[i] == b']':
        return i + 1
    while True:
        i = _sc_value(p, i, n, level, ev, tmp)
        if i < 0:
            return -1
        if p[i] == b',':
            i += 1
        elif p[i] == b']':
            return i + 1
        else:
            return -1


cdef Py_ssize_t _sc_object(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, int level, _ScEvent* ev,
                           _Buf tmp) except -2:
    """An object at ``level`` (1: the event) from its '{': the index after its '}', or -1 (declined: a name the
    hub might refuse, a name twice, anything orjson would not write back as it is)."""
    cdef Py_ssize_t at[SC_MAX_KEYS]
    cdef Py_ssize_t ln[SC_MAX_KEYS]
    cdef Py_ssize_t keys = 0, ks, kl, m, j, chars, v
    if level >= ev.max_level:
        return -1
    i += 1
    if p[i] == b'}':
        return i + 1
    while True:
        if p[i] != b'"' or keys == SC_MAX_KEYS:
            return -1
        ks = i + 1
        j = _sc_string(p, ks, n, &chars)
        if j < 0:
            return -1
        kl = j - 1 - ks
        if kl and (chars != kl or kl > 255 or _ascii_key_refused(<const char*>p + ks, kl, 1 if level == 1 else 2)):
            return -1  # a non-ASCII name, or one the hub may refuse: the exact path says which
        for m in range(keys):
            if ln[m] == kl and memcmp(p + at[m], p + ks, kl) == 0:
                return -1  # a name twice: orjson keeps the last value at the first place
        at[keys] = ks
        ln[keys] = kl
        keys += 1
        if p[j] != b':':
            return -1
        v = j + 1
        i = _sc_value(p, v, n, level, ev, tmp)
        if i < 0:
            return -1
        if level == 1 and p[v] == b'"':
            if kl == 2 and p[ks] == b'i' and p[ks + 1] == b'd':
                ev.id_at = v + 1
                ev.id_end = i - 1
                _sc_string(p, v + 1, n, &ev.id_chars)
            elif kl == 9 and memcmp(p + ks, b"timestamp", 9) == 0:
                ev.ts_at = v + 1
                ev.ts_end = i - 1
                _sc_string(p, v + 1, n, &ev.ts_chars)
        if p[i] == b',':
            i += 1
        elif p[i] == b'}':
            return i + 1
        else:
            return -1


cdef inline Py_ssize_t _sc_ws(const unsigned char* p, Py_ssize_t i) noexcept:
    # the NUL after the body's last byte stops it
    while p[i] == b' ' or p[i] == b'\n' or p[i] == b'\r' or p[i] == b'\t':
        i += 1
    return i


def hub_connect_scan(raw, max_event_bytes):
    """The hub's bulk path for a whole Connect batch body, read from its bytes (see ``_core.pyi``): a list of
    ``(collection, ids, bodies)`` in request order, or ``None``."""
    cdef const unsigned char* p
    cdef Py_ssize_t n, i, j, e, chars, limit, count = 0
    cdef _ScEvent ev
    cdef _Buf tmp = _Buf()
    cdef list out = [], ids, bodies
    cdef set names = set()
    cdef object name
    if not PyBytes_CheckExact(raw):
        raise TypeError(f"the body must be bytes, not {type(raw).__name__}")
    if not PyLong_CheckExact(max_event_bytes):
        raise TypeError(f"max_event_bytes must be an int, not {type(max_event_bytes).__name__}")
    limit = -1 if max_event_bytes < 0 else max_event_bytes if max_event_bytes < PY_SSIZE_T_MAX else PY_SSIZE_T_MAX
    p = <const unsigned char*>PyBytes_AS_STRING(raw)
    n = PyBytes_GET_SIZE(raw)
    ev.max_level = SC_MAX_LEVEL if SC_MAX_LEVEL < MAX_DEPTH else MAX_DEPTH
    i = _sc_ws(p, 0)
    if p[i] != b'{':
        return None
    i = _sc_ws(p, i + 1)
    if p[i] == b'}':
        return out if _sc_ws(p, i + 1) == n else None
    while True:
        if p[i] != b'"':
            return None
        j = _sc_string(p, i + 1, n, &chars)
        if j < 0:
            return None
        name = PyUnicode_DecodeUTF8(<const char*>p + i + 1, j - 2 - i, NULL)
        if name in names:
            return None  # a collection twice: the parse path refuses the body
        names.add(name)
        i = _sc_ws(p, j)
        if p[i] != b':':
            return None
        i = _sc_ws(p, i + 1)
        if p[i] != b'[':
            return None
        i = _sc_ws(p, i + 1)
        ids = []
        bodies = []
        if p[i] == b']':
            i += 1
        else:
            while True:
                if p[i] != b'{':
                    return None
                ev.id_at = ev.ts_at = -1
                e = _sc_object(p, i, n, 1, &ev, tmp)
                if (e < 0 or ev.id_at < 0 or ev.ts_at < 0 or not 1 <= ev.id_chars <= 255
                        or ev.ts_chars != ev.ts_end - ev.ts_at
                        or not _hub_timestamp_ok(p + ev.ts_at, ev.ts_end - ev.ts_at) or e - i > limit):
                    return None
                ids.append(PyUnicode_DecodeUTF8(<const char*>p + ev.id_at, ev.id_end - ev.id_at, NULL))
                bodies.append(PyBytes_FromStringAndSize(<const char*>p + i, e - i))
                count += 1
                if count & (SC_YIELD_EVERY - 1) == 0:
                    # PERF: a body of 5,000 events takes milliseconds; the hub's writer thread, between two
                    # statements, must not wait all that time for the GIL
                    with nogil:
                        pass
                i = _sc_ws(p, e)
                if p[i] == b',':
                    i = _sc_ws(p, i + 1)
                elif p[i] == b']':
                    i += 1
                    break
                else:
                    return None
            if len(set(ids)) != len(ids):
                return None
        out.append((name, ids, bodies))
        i = _sc_ws(p, i)
        if p[i] == b',':
            i = _sc_ws(p, i + 1)
        elif p[i] == b'}':
            return out if _sc_ws(p, i + 1) == n else None
        else:
            return None


cdef bint _tp_prefixed(dict event):
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef Py_UCS4 c0, c1
    while PyDict_Next(event, &pos, &k, &v):
        if PyUnicode_Check(<object>k) and PyUnicode_GET_LENGTH(<object>k) >= 3:
            c0 = PyUnicode_READ_CHAR(<object>k, 0)
            c1 = PyUnicode_READ_CHAR(<object>k, 1)
            if (c0 == 't' or c0 == 'T') and (c1 == 'p' or c1 == 'P') and PyUnicode_READ_CHAR(<object>k, 2) == '_':
                return True
    return False


cdef int _rb_items(dict out, dict d, int depth) except -1:
    """``out[k] = _rb_convert(v, depth)`` for the items of the exact dict ``d``, as the twin's ``d.items()`` loop:
    owned references (the conversion may run Python code that changes ``d``) and the dict iterator's own checks."""
    cdef Py_ssize_t pos = 0, used = PyDict_Size(d), left = used
    cdef PyObject* kp
    cdef PyObject* vp
    cdef object k, v
    while True:
        if PyDict_Size(d) != used:
            raise RuntimeError("dictionary changed size during iteration")
        if not PyDict_Next(d, &pos, &kp, &vp):
            return 0
        if left == 0:
            raise RuntimeError("dictionary keys changed during iteration")
        left -= 1
        k = <object>kp
        v = <object>vp
        PyDict_SetItem(out, k, _rb_convert(v, depth))


cdef object _rb_convert(object v, int depth):
    cdef dict out
    cdef char tmp[24]
    if PyUnicode_CheckExact(v) or PyLong_CheckExact(v) or v is None or PyBool_Check(v) or type(v) is float:
        return v
    if PyDateTime_CheckExact(v):
        if datetime_tzinfo(v) is None:
            _fmt_seconds(tmp, datetime_year(v), datetime_month(v), datetime_day(v), datetime_hour(v),
                         datetime_minute(v), datetime_second(v))
            tmp[19] = b'Z'
            return _ascii(tmp, 20)
        return _py._rb_convert(v, depth)
    if PyDate_CheckExact(v):
        _fmt_seconds(tmp, date_year(v), date_month(v), date_day(v), 0, 0, 0)
        tmp[19] = b'Z'
        return _ascii(tmp, 20)
    if PyDate_Check(v):
        # a subclass (of datetime too): the twin's conversion, which runs what Python code it runs
        return _py._rb_convert(v, depth)
    if depth >= MAX_DEPTH:
        # orjson must never see it (it does not count tuples): the twin's _find_problem names the field
        if PyDict_Check(v) or PyList_Check(v) or PyTuple_Check(v):
            return _DEEP
        return v if _plain_object(v) else _py._rb_convert(v, depth)
    if PyDict_CheckExact(v):
        out = {}
        _rb_items(out, <dict>v, depth + 1)
        return out
    if PyDict_Check(v):
        out = {}
        for k2, x2 in v.items():  # a subclass: its own items(), as the twin reads it
            out[k2] = _rb_convert(x2, depth + 1)
        return out
    if PyList_Check(v) or PyTuple_Check(v):
        return [_rb_convert(x2, depth + 1) for x2 in v]
    if _plain_object(v):
        return v
    return _py._rb_convert(v, depth)  # maybe a dataclass or an Enum: the twin measures what it holds


# ---------------------------------------------------------------------------------------------------------------
# Encoder

@cython.final
cdef class Encoder:
    """Validates, stamps, serializes and frames events for one dialect (see ``_core.pyi``)."""

    cdef object _dialect
    cdef int _rules
    cdef int _framing
    cdef Py_ssize_t _max_events   # -1: unlimited
    cdef Py_ssize_t _max_bytes
    cdef Py_ssize_t _max_event
    cdef object _clock            # None: the system clock
    cdef _Pool _pool
    cdef _Acc _open
    cdef object _codes
    cdef object _c_customer, _c_product, _c_type
    cdef _Buf _scratch            # the Barchart writer's output for one event
    cdef object _too_large
    cdef object _checked_coll     # PERF: the last collection that passed the name check (identity)

    def __init__(self, dialect, *, max_batch_events=_DIALECT_LIMIT, max_batch_bytes=_DIALECT_LIMIT,
                 clock=None, urandom=None):
        if not isinstance(dialect, Dialect):
            raise TypeError(f"dialect must be a Dialect, not {type(dialect).__name__}")
        if max_batch_events is _DIALECT_LIMIT:
            max_batch_events = dialect.max_batch_events
        if max_batch_bytes is _DIALECT_LIMIT:
            max_batch_bytes = dialect.max_batch_bytes
        for name, value in (("max_batch_events", max_batch_events), ("max_batch_bytes", max_batch_bytes)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
        self._dialect = dialect
        rules = dialect.rules
        self._rules = (RULES_CONNECT_PY if rules == "connect_py" else RULES_CONNECT_RB if rules == "connect_rb"
                       else RULES_BARCHART if rules == "barchart" else RULES_NONE)
        self._framing = _framing_code(dialect.framing)
        # beyond the C range a limit cannot be reached: the largest Py_ssize_t says the same
        self._max_events = -1 if max_batch_events is None else min(max_batch_events, PY_SSIZE_T_MAX)
        self._max_bytes = -1 if max_batch_bytes is None else min(max_batch_bytes, PY_SSIZE_T_MAX)
        self._max_event = -1 if dialect.max_event_bytes is None else dialect.max_event_bytes
        self._too_large = dialect.too_large_message
        self._clock = clock
        self._pool = _Pool(urandom)
        self._open = _Acc(dialect)
        self._codes = dialect.codes
        if self._rules == RULES_BARCHART:
            self._c_customer = frozenset(dialect.codes["customer"])
            self._c_product = frozenset(dialect.codes["product"])
            self._c_type = frozenset(dialect.codes["type"])
        self._scratch = _Buf()
        self._checked_coll = _UNSET

    @property
    def dialect(self):
        return self._dialect

    @property
    def pending(self):
        """Events in the open (unsealed) batch."""
        return self._open.n

    @property
    def pending_bytes(self):
        """Body bytes of the open batch, as it would be if sealed now."""
        return self._open.nbytes

    def __repr__(self):
        return f"<Encoder {self._dialect.name} (cython) pending={self._open.n}>"

    cdef long long _now(self) except? -1:
        if self._clock is None:
            # PERF: the system clock read in C (the twin reads time.time_ns() // 1000: the same value)
            return eventpush_now_micros()
        return _micros_of(self._clock())

    # -- rules ----------------------------------------------------------------------------------------------

    cdef bytes _connect_py(self, object event):
        """The event's bytes, or None when they are in the scratch buffer (the writer's common case)."""
        cdef dict d
        cdef PyObject* tsp
        cdef object ts
        cdef bint ts_ok = True
        cdef bint exact
        cdef bytes data
        cdef int flags
        cdef _Buf out
        if not PyDict_Check(event):
            raise EventTypeError(_py.MSG_NOT_DICT)
        d = <dict>event
        exact = PyDict_CheckExact(event)
        # the storage decides (errors of a key's __eq__ propagate); the stamps of a subclass go through its own
        # __setitem__ (an OrderedDict's order), as the twin writes them
        if not PyDict_Contains(d, _K_ID):
            if exact:
                PyDict_SetItem(d, _K_ID, self._pool.uuid())
            else:
                event[_K_ID] = self._pool.uuid()
        if not PyDict_Contains(d, _K_TIMESTAMP):
            if exact:
                PyDict_SetItem(d, _K_TIMESTAMP, _naive_datetime(self._now()))
            else:
                event[_K_TIMESTAMP] = _naive_datetime(self._now())
        else:
            tsp = PyDict_GetItemWithError(d, _K_TIMESTAMP)  # the twin's event["timestamp"]
            if tsp == NULL:
                raise KeyError(_K_TIMESTAMP)
            if not PyDateTime_CheckExact(<object>tsp):
                ts = <object>tsp  # owned: hasattr may run Python code that changes the dict
                ts_ok = hasattr(ts, "date")
        if ts_ok and exact:
            # PERF: validation and JSON in one walk, straight into the scratch buffer (no bytes object, no
            # second walk); anything the writer does not do itself goes on to the scan + orjson path below
            out = self._scratch
            out.len = 0
            if _w_dict(out, d, 1, KEYS_CHAIN) == W_OK:
                return None
        flags = _scan(d, 1, True)
        if not ts_ok or (flags & (SCAN_BAD_KEY | SCAN_SLOW)) or ((flags & SCAN_NONASCII_TOP) and _top_reserved(d)):
            _py._connect_py_check(d, ts_ok)
        if flags & SCAN_SLOW:
            # the scan measured the depth: nothing MAX_DEPTH deep reaches orjson
            return _py._serialize(d, _OPT_CONNECT_PY, _iso_default, True,
                                  None if flags & SCAN_OBJECT else (flags & SCAN_DEEP) != 0)
        # PERF: one plain orjson call. Naive datetimes and dates are formatted natively (byte-equal to the
        # isoformat() the twin calls through OPT_PASSTHROUGH_DATETIME); OPT_NON_STR_KEYS (slower) only when a key
        # needs it; objects that need default= (other .isoformat() types) make orjson raise and take the twin's path.
        try:
            if flags & SCAN_NONSTR_KEY:
                data = _call_dumps(d, None, _OPT_NATIVE_PY)
            else:
                data = _dumps(d)
        except TypeError:
            return _py._serialize(d, _OPT_CONNECT_PY, _iso_default, True, False)
        return data

    cdef bytes _connect_rb(self, object event):
        cdef dict d, out
        cdef PyObject* v
        cdef char tmp[24]
        cdef _Civil c
        cdef bytes data
        if not PyDict_Check(event):
            raise EventTypeError(_py.MSG_NOT_DICT)
        d = <dict>event
        if not PyDict_CheckExact(event) or _tp_prefixed(d):
            _py._rb_check(event)  # a subclass: the twin iterates it as Python does
        out = {}
        # the twin's lookups: "id" in event, then event["id"] (errors of a key's __eq__ propagate)
        if PyDict_Contains(d, _K_ID):
            v = PyDict_GetItemWithError(d, _K_ID)
            if v == NULL:
                raise KeyError(_K_ID)
            out[_K_ID] = <object>v
        else:
            out[_K_ID] = self._pool.uuid()
        if PyDict_Contains(d, _K_TIMESTAMP):
            out[_K_TIMESTAMP] = None
        else:
            c = _split_micros(self._now())
            _fmt_seconds(tmp, c.year, c.month, c.day, c.hour, c.minute, c.second)
            tmp[19] = b'Z'
            out[_K_TIMESTAMP] = _ascii(tmp, 20)
        try:
            if PyDict_CheckExact(event):
                _rb_items(out, d, 1)
            else:
                for k, x in event.items():  # a subclass (an OrderedDict): its own items(), as the twin reads it
                    out[k] = _rb_convert(x, 1)
        except OverflowError:  # an aware datetime whose UTC value is outside years 1-9999
            raise _py._rb_date_error(event) from None
        # only dicts and lists, none MAX_DEPTH deep (_DEEP stands there, and orjson refuses it): safe for orjson
        try:
            data = _dumps(out)
        except TypeError:
            return _py._serialize(out, 0, None, True, False)
        if _has_null(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)):
            return _py._serialize(out, 0, None, True, False)
        return data

    cdef bint _bc_code(self, object v, object allowed) except -1:
        if PyUnicode_CheckExact(v) and PySet_Contains(allowed, v) == 1:
            _write_json_str(self._scratch, v)
            return True
        return False

    cdef bint _barchart_fast(self, object event) except -1:
        """Write a well-formed Barchart event into the scratch buffer; False sends it to the twin's path."""
        cdef _Buf out = self._scratch
        cdef PyObject* v
        cdef object item, ctx
        cdef Py_ssize_t i, n
        cdef long long ts
        cdef int overflow = 0
        out.len = 0
        if not PyDict_Check(event):
            return False
        out.write(b'{"customer":', 12)
        v = PyDict_GetItemWithError(event, _K_CUSTOMER)
        if v == NULL or not self._bc_code(<object>v, self._c_customer):
            return False
        out.write(b',"product":', 11)
        v = PyDict_GetItemWithError(event, _K_PRODUCT)
        if v == NULL or not self._bc_code(<object>v, self._c_product):
            return False
        out.write(b',"type":', 8)
        v = PyDict_GetItemWithError(event, _K_TYPE)
        if v == NULL or not self._bc_code(<object>v, self._c_type):
            return False
        v = PyDict_GetItemWithError(event, _K_VERSION)
        if v != NULL and <object>v is not None:
            if not PyUnicode_CheckExact(<object>v):
                return False
            out.write(b',"version":', 11)
            if _write_json_str(out, <object>v):
                return False
        out.write(b',"timestamp":', 13)
        v = PyDict_GetItemWithError(event, _K_TIMESTAMP)
        if v == NULL:
            return False
        if PyLong_CheckExact(<object>v):
            ts = PyLong_AsLongLongAndOverflow(<object>v, &overflow)
            if overflow or ts > 8640000000000000LL or ts < -8640000000000000LL:
                return False  # outside JavaScript's Date range: the twin's path refuses it
        elif PyDateTime_CheckExact(<object>v) and (<object>v).tzinfo is None:
            item = <object>v
            ts = (_days_from_civil(item.year, item.month, item.day) * 86400000LL
                  + item.hour * 3600000LL + item.minute * 60000LL + item.second * 1000LL
                  + item.microsecond // 1000)
        else:
            return False
        _write_ll(out, ts)
        out.write(b',"context":[', 12)
        v = PyDict_GetItemWithError(event, _K_CONTEXT)
        if v == NULL or not PyList_CheckExact(<object>v):
            return False
        ctx = <object>v
        n = PyList_GET_SIZE(ctx)
        for i in range(n):
            if i:
                out.write_byte(b',')
            item = <object>PyList_GET_ITEM(ctx, i)
            if PyUnicode_CheckExact(item):
                if _write_json_str(out, item):
                    return False
            elif PyLong_CheckExact(item):
                ts = PyLong_AsLongLongAndOverflow(item, &overflow)
                if overflow:
                    return False
                _write_ll(out, ts)
            elif item is None:
                out.write(b'null', 4)
            elif item is True:
                out.write(b'true', 4)
            elif item is False:
                out.write(b'false', 5)
            else:
                return False
        out.write(b']}', 2)
        return True

    cdef object _encode_raw(self, object event, object collection, bint single):
        """Validate, stamp and serialize; returns the bytes, or None when they are in the scratch buffer."""
        cdef object data
        cdef int rules = self._rules
        if self._framing == FRAMING_COLLECTIONS and collection is not self._checked_coll:
            if not (single and collection is None):
                self._open.escaped(collection)
                self._checked_coll = collection
        if rules == RULES_CONNECT_PY:
            data = self._connect_py(event)
            if data is None:
                if self._max_event >= 0 and self._scratch.len > self._max_event:
                    raise EventTooLargeError(self._too_large)
                return None
        elif rules == RULES_BARCHART:
            # PERF: the common case is written straight from the dict, no intermediate dict, no orjson call
            if self._barchart_fast(event):
                if self._max_event >= 0 and self._scratch.len > self._max_event:
                    raise EventTooLargeError(self._too_large)
                return None
            data = _py._prepare_barchart(event, self._codes)
        elif rules == RULES_CONNECT_RB:
            data = self._connect_rb(event)
        elif (PyDict_Check(event) or PyList_Check(event) or PyTuple_Check(event)) and _too_deep(event, 1):
            # the depth guard (orjson does not count tuples): too deep, or an object inside that the twin's walk
            # measures; refused as orjson refuses a list that deep
            data = _py._serialize(event, 0, None, True, None)
        else:
            try:
                data = _dumps(event)
            except TypeError:
                data = _py._serialize(event, 0, None, True, False)
            else:
                if _has_null(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)):
                    data = _py._serialize(event, 0, None, True, False)
        if self._max_event >= 0 and PyBytes_GET_SIZE(data) > self._max_event:
            raise EventTooLargeError(self._too_large)
        return data

    cdef object _encode_located(self, object event, object collection, Py_ssize_t index, bint single):
        try:
            return self._encode_raw(event, collection, single)
        except EventError as exc:
            exc.index = index
            exc.collection = collection if isinstance(collection, str) else None
            raise

    cdef Batch _add_to(self, _Acc acc, object data, object collection, object tag, Py_ssize_t ptag):
        """Append encoded bytes (``data``, or the scratch buffer when None); return a sealed batch or None."""
        cdef const char* p
        cdef Py_ssize_t n
        cdef Batch sealed = None
        if data is None:
            p = self._scratch.data
            n = self._scratch.len
        else:
            p = PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        if self._framing != FRAMING_COLLECTIONS:
            collection = None
        if acc.n and self._max_bytes >= 0 and acc.size_with(n, collection) > self._max_bytes:
            sealed = acc.seal()
        acc.append(p, n, collection, tag, ptag)
        if self._max_events >= 0 and acc.n >= self._max_events:
            sealed = acc.seal()
        return sealed

    def encode(self, event, collection=None):
        """Validate, stamp and serialize one event; return its bytes (``collection`` may be omitted here)."""
        data = self._encode_located(event, collection, 0, True)
        if data is None:
            return PyBytes_FromStringAndSize(self._scratch.data, self._scratch.len)
        return data

    def add(self, event, collection=None, tag=None):
        """Encode one event into the open batch; return a batch sealed by it, if any."""
        data = self._encode_located(event, collection, 0, False)
        return self._add_to(self._open, data, collection, tag, 0)

    def add_encoded(self, data, collection=None, tag=None):
        """Append an event's bytes as ``encode()`` of this dialect returned them; return a batch sealed by it."""
        if not PyBytes_CheckExact(data):
            raise TypeError(f"add_encoded takes the bytes encode() returned, not {type(data).__name__}")
        if self._max_event >= 0 and PyBytes_GET_SIZE(data) > self._max_event:
            raise EventTooLargeError(self._too_large)
        if self._framing == FRAMING_COLLECTIONS:
            self._open.escaped(collection)  # a collection name that is no str raises here, the batch unchanged
        return self._add_to(self._open, data, collection, tag, 0)

    def seal(self):
        """Seal and return the open batch, or None when it is empty."""
        return self._open.seal() if self._open.n else None

    def encode_batch(self, events, collection=None, *, bint stop_at_error=False):
        """Encode many events at once, independently of the open batch (see ``_core.pyi``)."""
        cdef _Acc acc
        cdef list sealed = [], errors = []
        cdef Py_ssize_t i
        cdef Batch b
        cdef bint keyed, tuples
        if isinstance(events, (list, tuple)):
            work = [(collection, events, False)]
        elif isinstance(events, _py.Mapping):
            if collection is not None:
                raise ValueError("collection must be None when events is a mapping")
            for name, items in events.items():
                if not isinstance(items, (list, tuple)):
                    raise EventTypeError(_py.MSG_NOT_LIST, collection=name if isinstance(name, str) else None)
            work = [(name, items, True) for name, items in events.items()]
        else:
            raise EventTypeError(_py.MSG_NOT_LIST, collection=collection)
        acc = _Acc(self._dialect)
        keyed = isinstance(events, _py.Mapping)
        # PERF: positions in a C array, and for a mapping with "collections" framing (collection, i) rebuilt from
        # the stored collection; other framings store no collection, so there a mapping's tags are kept as tuples
        tuples = keyed and self._framing != FRAMING_COLLECTIONS
        acc.keyed = keyed and not tuples
        acc.positional = not tuples
        for name, items, _keyed in work:
            i = 0
            for event in items:
                try:
                    data = self._encode_located(event, name, i, False)
                except EventError as exc:
                    errors.append(exc)
                    if stop_at_error:
                        return [], errors
                else:
                    b = self._add_to(acc, data, name, (name, i) if tuples else None, i)
                    if b is not None:
                        sealed.append(b)
                i += 1
        if acc.n:
            sealed.append(acc.seal())
        return sealed, errors


# ---------------------------------------------------------------------------------------------------------------
# The push path of the Batcher

cdef class BatcherBase:
    """The hot path of :class:`eventpush.batcher.Batcher` (its base class): ``push`` in C. The subclass owns
    everything else (threads, spool, flush, close) and keeps these attributes; ``_make_room`` is its own."""

    cdef object _lock_obj
    cdef object _acquire          # PERF: the lock's bound methods, looked up once per lock
    cdef object _release
    cdef public object _encoder
    cdef public object _ready
    cdef public object _work
    cdef public Py_ssize_t _buffered
    cdef object _limit_obj        # what the subclass set (any number, as the twin compares it)
    cdef Py_ssize_t _climit       # PERF: the same threshold as a C integer ...
    cdef bint _limit_generic      # ... unless only Python's comparison can say (not an int or a float)

    @property
    def _limit(self):
        return self._limit_obj

    @_limit.setter
    def _limit(self, limit):
        cdef int overflow = 0
        cdef long long ll
        cdef double f
        self._limit_generic = False
        if isinstance(limit, int):  # (bool too) _buffered >= limit, for any int
            ll = PyLong_AsLongLongAndOverflow(limit, &overflow)
            self._climit = (PY_SSIZE_T_MAX if overflow > 0 else PY_SSIZE_T_MIN if overflow < 0 else
                            PY_SSIZE_T_MAX if ll > PY_SSIZE_T_MAX else PY_SSIZE_T_MIN if ll < PY_SSIZE_T_MIN
                            else <Py_ssize_t>ll)
        elif PyFloat_Check(limit):  # _buffered >= f  <=>  _buffered >= ceil(f); never for NaN
            f = PyFloat_AS_DOUBLE(limit)
            if f != f or f > 9.2e18:
                self._climit = PY_SSIZE_T_MAX
            elif f < -9.2e18:
                self._climit = PY_SSIZE_T_MIN
            else:
                self._climit = <Py_ssize_t>ceil(f)
        else:
            self._limit_generic = True
            self._climit = 0
        self._limit_obj = limit

    @property
    def _lock(self):
        return self._lock_obj

    @_lock.setter
    def _lock(self, lock):
        self._lock_obj = lock
        self._acquire = lock.acquire
        self._release = lock.release

    def push(self, event, collection=None):
        """Validate, stamp and encode ``event`` now (bad input raises the encoder's
        :class:`~eventpush.errors.EventError` here, naming the field); delivery happens in the background.
        Thread-safe. Raises :class:`~eventpush.errors.BufferFullError` per the overflow policy and
        :class:`~eventpush.errors.ClosedError` after ``close()``."""
        self._push(event, collection, False)

    def push_encoded(self, data, collection=None):
        """``push`` for an event already encoded by an ``Encoder`` of this dialect (``encode()``'s bytes): buffered
        and delivered as they are, without a second validation or encoding."""
        self._push(data, collection, True)

    cdef int _push(self, object item, object collection, bint encoded) except -1:
        # PERF: one lock, one comparison (``_limit`` drops below zero once closed, so the closed check rides on
        # the room check), one encoder call (a direct C call for the compiled Encoder), one counter
        cdef object release = self._release
        cdef object batch
        cdef Encoder enc
        self._acquire()
        try:
            if (self._buffered >= self._climit if not self._limit_generic
                    else self._buffered >= self._limit_obj):
                self._make_room()
            if encoded:
                batch = self._encoder.add_encoded(item, collection)
            elif type(self._encoder) is Encoder:
                enc = <Encoder>self._encoder
                batch = enc._add_to(enc._open, enc._encode_located(item, collection, 0, False), collection, None, 0)
            else:
                batch = self._encoder.add(item, collection)
            self._buffered += 1
            if batch is not None:
                self._ready.append(batch)
                self._work.notify()
        finally:
            release()
        return 0
