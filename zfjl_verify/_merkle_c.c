/* RFC 9162 tree hashing in bulk: the two loops of zfjl_verify.merkle that Python cannot make cheap.
 *
 * Appending a leaf costs two SHA-256 calls (the leaf and, on average, one interior node). From Python
 * each call also pays for a hash object, a prefix concatenation and the interpreter's loop, which is
 * why the pure-Python tree stayed at about a third of the speed of hashing the leaves once. Here a whole
 * batch is one call: the hashing is OpenSSL's (the same library, and the same SHA extensions, as
 * Python's hashlib), the only per-node Python work left is creating the 32-byte result.
 *
 * The module is optional: zfjl_verify.merkle falls back to hashlib when it is not built, and the tests
 * check that both give the same nodes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, whose per-call fetch and
 * context allocation cost more than hashing 65 bytes; they still go straight to the same assembly. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#define HASH_SIZE 32

static PyObject *
digest_to_bytes(const unsigned char *md)
{
    return PyBytes_FromStringAndSize((const char *)md, HASH_SIZE);
}

/* leaf_hashes(datas) -> list[bytes]: SHA-256(0x00 || d) for every bytes-like d, in order. */
static PyObject *
leaf_hashes(PyObject *module, PyObject *datas)
{
    PyObject *seq = PySequence_Fast(datas, "leaf data must be a sequence of bytes");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    static const unsigned char prefix = 0x00;
    unsigned char md[HASH_SIZE];
    SHA256_CTX ctx;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(out);
            Py_DECREF(seq);
            return NULL;
        }
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, &prefix, 1);
        SHA256_Update(&ctx, view.buf, (size_t)view.len);
        SHA256_Final(md, &ctx);
        PyBuffer_Release(&view);
        PyObject *digest = digest_to_bytes(md);
        if (digest == NULL) {
            Py_DECREF(out);
            Py_DECREF(seq);
            return NULL;
        }
        PyList_SET_ITEM(out, i, digest);
    }
    Py_DECREF(seq);
    return out;
}

/* parents(row, start, pairs) -> list[bytes]: SHA-256(0x01 || row[start+2j] || row[start+2j+1]) for
 * j in range(pairs). Every element used must be a 32-byte bytes object (the tree only stores those). */
static PyObject *
parents(PyObject *module, PyObject *args)
{
    PyObject *row;
    Py_ssize_t start, pairs;
    if (!PyArg_ParseTuple(args, "O!nn:parents", &PyList_Type, &row, &start, &pairs)) {
        return NULL;
    }
    if (start < 0 || pairs < 0 || start > PyList_GET_SIZE(row) - 2 * pairs) {
        PyErr_SetString(PyExc_IndexError, "pairs outside the row");
        return NULL;
    }
    PyObject *out = PyList_New(pairs);
    if (out == NULL) {
        return NULL;
    }
    unsigned char buf[1 + 2 * HASH_SIZE];
    unsigned char md[HASH_SIZE];
    SHA256_CTX ctx;
    buf[0] = 0x01;
    for (Py_ssize_t j = 0; j < pairs; j++) {
        if (start + 2 * j + 1 >= PyList_GET_SIZE(row)) {
            /* Only a finalizer run by the garbage collector could have shrunk the row meanwhile. */
            Py_DECREF(out);
            PyErr_SetString(PyExc_IndexError, "the row changed while it was hashed");
            return NULL;
        }
        PyObject *left = PyList_GET_ITEM(row, start + 2 * j);
        PyObject *right = PyList_GET_ITEM(row, start + 2 * j + 1);
        if (!PyBytes_Check(left) || !PyBytes_Check(right) || PyBytes_GET_SIZE(left) != HASH_SIZE ||
            PyBytes_GET_SIZE(right) != HASH_SIZE) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_ValueError, "a node hash is not 32 bytes");
            return NULL;
        }
        memcpy(buf + 1, PyBytes_AS_STRING(left), HASH_SIZE);
        memcpy(buf + 1 + HASH_SIZE, PyBytes_AS_STRING(right), HASH_SIZE);
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, buf, sizeof buf);
        SHA256_Final(md, &ctx);
        PyObject *digest = digest_to_bytes(md);
        if (digest == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, digest);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"leaf_hashes", leaf_hashes, METH_O, "SHA-256(0x00 || d) of every leaf datum, in order."},
    {"parents", parents, METH_VARARGS,
     "SHA-256(0x01 || left || right) of `pairs` sibling pairs of `row` from index `start`."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_merkle_c", "RFC 9162 tree hashing in bulk (optional accelerator).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__merkle_c(void)
{
    return PyModule_Create(&module_def);
}
