/* The line scanner of sharded JSONL replay (scenetrigger.runtime.replay_scan).
 *
 * Optional: built when a C compiler is present (setup.py), else replay_scan
 * runs its pure-Python twin, which gives the same answers (the tests run
 * both). It reads lines that start {"user_id":"U","ts":N followed by , or }
 * from their bytes only: their owner shard (crc32 of U's identity root), the
 * running maximum of the times (the clock after each record), and this
 * shard's own lines. It stops at the first line of another shape, one too
 * long, a user id longer than the limit, a time past the limit, or one that
 * has "user_id" or "ts" again or a \u escape after its head (a duplicate key
 * would make the parsed event differ from the bytes): Python parses that line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* zlib.crc32 */
static uint32_t crc32_of(const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n-- > 0)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

typedef struct {
    int64_t *data;
    Py_ssize_t len, cap;
} vec;

static int vec_push(vec *v, int64_t x)
{
    if (v->len == v->cap) {
        Py_ssize_t cap = v->cap ? v->cap * 2 : 1024;
        int64_t *data = PyMem_Realloc(v->data, (size_t)cap * sizeof(int64_t));
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        v->data = data;
        v->cap = cap;
    }
    v->data[v->len++] = x;
    return 0;
}

static PyObject *vec_bytes(vec *v)
{
    return PyBytes_FromStringAndSize((const char *)v->data,
                                     v->len * (Py_ssize_t)sizeof(int64_t));
}

/* No "user_id" or "ts" and no \u escape in [p, stop): no key can repeat the
 * head's, so the parsed user and time are the bytes'. */
static int plain_rest(const unsigned char *p, const unsigned char *stop)
{
    for (; p < stop; p++) {
        if (*p == '\\') {
            if (p + 1 < stop && p[1] == 'u')
                return 0;
            p++; /* an escaped character: not a quote that opens a key */
        } else if (*p == '"') {
            Py_ssize_t left = stop - p - 1;
            if ((left >= 8 && memcmp(p + 1, "user_id\"", 8) == 0) ||
                (left >= 3 && memcmp(p + 1, "ts\"", 3) == 0))
                return 0;
        }
    }
    return 1;
}

static const char HEAD[] = "{\"user_id\":\"";
static const char TS[] = ",\"ts\":";
#define HEAD_LEN 12
#define TS_LEN 6

/* scan(buf, start, end, shards, shard, roots, base, clock, limit, max_line, max_user)
 *   -> (stop, own_lines, own_positions, own_ts, clocks)
 * Lines of buf[start:end] ('\n' ends a line; the last may lack it). Position
 * of the first: base + 1. roots: dict of id bytes -> root bytes, or None.
 * own_positions, own_ts, clocks: native int64 arrays as bytes (clocks: one
 * per line read, the running maximum from `clock`). stop: where the first
 * line left to Python starts (end if none). */
static PyObject *scan(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end, max_line, max_user;
    long shards, shard;
    PyObject *roots;
    long long base, clock, limit;
    if (!PyArg_ParseTuple(args, "y*nnllOLLLnn", &view, &start, &end, &shards, &shard, &roots,
                          &base, &clock, &limit, &max_line, &max_user))
        return NULL;
    PyObject *lines = NULL, *result = NULL;
    vec positions = {0}, times = {0}, clocks = {0};
    if (start < 0 || end > view.len || start > end || shards < 1) {
        PyErr_SetString(PyExc_ValueError, "scan: bad range or shard count");
        goto done;
    }
    int use_roots = roots != Py_None && PyDict_Check(roots) && PyDict_GET_SIZE(roots) > 0;
    lines = PyList_New(0);
    if (lines == NULL)
        goto done;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t at = start;
    int64_t read = (int64_t)base, now = (int64_t)clock;
    while (at < end) {
        const unsigned char *line = buf + at;
        const unsigned char *nl = memchr(line, '\n', (size_t)(end - at));
        Py_ssize_t len = nl ? (nl - line) + 1 : end - at;
        const unsigned char *stop = line + len, *p;
        if (len > max_line || len < HEAD_LEN || memcmp(line, HEAD, HEAD_LEN) != 0)
            break;
        const unsigned char *user = line + HEAD_LEN;
        for (p = user; p < stop && *p != '"' && *p != '\\'; p++)
            ;
        if (p >= stop || *p != '"')
            break;
        Py_ssize_t user_len = p - user;
        if (user_len > max_user)
            break;
        p++;
        if (stop - p < TS_LEN || memcmp(p, TS, TS_LEN) != 0)
            break;
        p += TS_LEN;
        int negative = 0;
        if (p < stop && *p == '-') {
            negative = 1;
            p++;
        }
        if (p >= stop || *p < '0' || *p > '9')
            break;
        uint64_t value = 0;
        int overflow = 0;
        for (; p < stop && *p >= '0' && *p <= '9'; p++) {
            unsigned digit = (unsigned)(*p - '0');
            if (value > (uint64_t)(INT64_MAX - digit) / 10) {
                overflow = 1;
                break;
            }
            value = value * 10 + digit;
        }
        if (overflow || p >= stop || (*p != ',' && *p != '}'))
            break;
        int64_t ts = negative ? -(int64_t)value : (int64_t)value;
        if (ts > (int64_t)limit || !plain_rest(p, stop))
            break;
        uint32_t hash;
        if (use_roots) {
            PyObject *key = PyBytes_FromStringAndSize((const char *)user, user_len);
            if (key == NULL)
                goto done;
            PyObject *root = PyDict_GetItemWithError(roots, key); /* borrowed */
            Py_DECREF(key);
            if (root == NULL && PyErr_Occurred())
                goto done;
            if (root != NULL && PyBytes_Check(root))
                hash = crc32_of((const unsigned char *)PyBytes_AS_STRING(root),
                                PyBytes_GET_SIZE(root));
            else
                hash = crc32_of(user, user_len);
        } else {
            hash = crc32_of(user, user_len);
        }
        read++;
        if (ts > now)
            now = ts;
        if (vec_push(&clocks, now) < 0)
            goto done;
        if ((long)(hash % (uint32_t)shards) == shard) {
            PyObject *raw = PyBytes_FromStringAndSize((const char *)line, len);
            if (raw == NULL)
                goto done;
            int failed = PyList_Append(lines, raw);
            Py_DECREF(raw);
            if (failed < 0 || vec_push(&positions, read) < 0 || vec_push(&times, ts) < 0)
                goto done;
        }
        at += len;
    }
    {
        PyObject *p = vec_bytes(&positions), *t = vec_bytes(&times), *c = vec_bytes(&clocks);
        if (p && t && c)
            result = Py_BuildValue("(nOOOO)", at, lines, p, t, c);
        Py_XDECREF(p);
        Py_XDECREF(t);
        Py_XDECREF(c);
    }
done:
    Py_XDECREF(lines);
    PyMem_Free(positions.data);
    PyMem_Free(times.data);
    PyMem_Free(clocks.data);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Route the JSONL lines of a buffer from their bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_linescan", "Sharded replay's JSONL line scanner.", -1, methods,
};

PyMODINIT_FUNC PyInit__linescan(void)
{
    crc_init();
    return PyModule_Create(&module);
}
