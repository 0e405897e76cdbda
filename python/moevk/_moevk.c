/*
 * moevk._moevk: the CPython extension under the Python package.
 *
 * Marshalling only: Python objects to and from the library's structs and
 * the backend table (src/backend/backend.h: vulkan, the CPU reference, the
 * CUDA backends when built), which `moevk run` drives the same way, and
 * the checkpoint loader (src/model/model_open.h). The API a user sees is
 * moevk/_api.py; this module is its private half.
 *
 * Threads: the GIL is released during every library call that may wait
 * (context creation, layer creation, passes). A context, and every layer
 * made on it, is used by one thread at a time (the library's rule): each
 * Context holds a lock that its layers' calls take, waiting with the GIL
 * released; a layer without a context (the cpu backend) has its own. The
 * lock is never held while waiting for the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "layer.h"
#include "model/model_open.h"
#include "moevk/moevk.h"
#include "util/tool.h"

/* ---- exceptions ------------------------------------------------------------ */

/* index = -status (1 .. 12); 0 = Error itself */
#define N_STATUS 13
static PyObject *exc_status[N_STATUS];
static PyObject *exc_checkpoint;

static const struct {
    const char *name;
    const char *doc;
} exc_names[N_STATUS] = {
    {"Error", "A moevk call failed; .status is the moevk_status, str() the library's message."},
    {"InvalidArgumentError", "MOEVK_ERROR_INVALID_ARGUMENT: a parameter is out of range."},
    {"OutOfHostMemoryError", "MOEVK_ERROR_OUT_OF_HOST_MEMORY."},
    {"OutOfDeviceMemoryError", "MOEVK_ERROR_OUT_OF_DEVICE_MEMORY."},
    {"NoVulkanError", "MOEVK_ERROR_NO_VULKAN: no Vulkan loader could be opened."},
    {"NoDeviceError", "MOEVK_ERROR_NO_DEVICE: no (matching) Vulkan device."},
    {"UnsupportedError", "MOEVK_ERROR_UNSUPPORTED: the device lacks a feature."},
    {"LimitExceededError", "MOEVK_ERROR_LIMIT_EXCEEDED: a size beyond a device limit."},
    {"DeviceLostError", "MOEVK_ERROR_DEVICE_LOST."},
    {"TimeoutError", "MOEVK_ERROR_TIMEOUT: a GPU wait ran past its timeout."},
    {"VulkanError", "MOEVK_ERROR_VULKAN: another Vulkan error."},
    {"InternalError", "MOEVK_ERROR_INTERNAL."},
    {"BusyError", "MOEVK_ERROR_BUSY: another thread is inside a call on the context."},
};

/* Raise the exception of `st` with message msg (status attribute set). */
static PyObject *raise_status(moevk_status st, const char *msg)
{
    int i = (int)st < 0 && -(int)st < N_STATUS ? -(int)st : 0;
    PyObject *cls = exc_status[i];
    PyObject *e = PyObject_CallFunction(cls, "s", msg && *msg ? msg : moevk_status_string(st));
    if (!e)
        return NULL;
    PyObject *code = PyLong_FromLong((long)st);
    if (!code || PyObject_SetAttrString(e, "status", code) < 0) {
        Py_XDECREF(code);
        Py_DECREF(e);
        return NULL;
    }
    Py_DECREF(code);
    PyErr_SetObject(cls, e);
    Py_DECREF(e);
    return NULL;
}

static PyObject *invalid(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static PyObject *invalid(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return raise_status(MOEVK_ERROR_INVALID_ARGUMENT, msg);
}

/* ---- locks ----------------------------------------------------------------- */

/* Every wait for a lock happens with the GIL released, and the work under
 * the lock too: a thread holding a lock never waits for the GIL, so a
 * thread holding the GIL may wait for a lock (layer_dealloc). */

/* ---- device info ----------------------------------------------------------- */

static const char *device_type_name(uint32_t t)
{
    /* VkPhysicalDeviceType */
    static const char *const names[] = {"other", "integrated", "discrete", "virtual", "cpu"};
    return t < 5 ? names[t] : "other";
}

static PyObject *device_dict(const moevk_device_info *d, uint32_t index)
{
    char api[32];
    snprintf(api, sizeof api, "%u.%u.%u", (d->api_version >> 22) & 0x7fu,
             (d->api_version >> 12) & 0x3ffu, d->api_version & 0xfffu);
    return Py_BuildValue(
        "{s:I,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:K,s:K,s:O,s:O,s:O,s:O,s:O,s:O,s:i,"
        "s:O,s:O}",
        "index", index, "name", d->name, "type", device_type_name(d->device_type), "vendor_id",
        d->vendor_id, "device_id", d->device_id, "api_version", api, "driver_name",
        d->driver_name, "driver_info", d->driver_info, "subgroup_size", d->subgroup_size,
        "min_subgroup_size", d->min_subgroup_size, "max_subgroup_size", d->max_subgroup_size,
        "max_shared_memory", d->max_shared_memory, "device_local_bytes",
        (unsigned long long)d->device_local_bytes, "max_storage_buffer_range",
        (unsigned long long)d->max_storage_buffer_range, "fp16_arith",
        d->fp16_arith ? Py_True : Py_False, "storage_16bit", d->storage_16bit ? Py_True : Py_False,
        "bf16", d->bf16 ? Py_True : Py_False, "cooperative_matrix",
        d->cooperative_matrix ? Py_True : Py_False, "timestamps",
        d->timestamps ? Py_True : Py_False, "memory_budget", d->memory_budget ? Py_True : Py_False,
        "matrix_units", d->matrix_units, "imported", d->imported ? Py_True : Py_False,
        "push_descriptor", d->push_descriptor ? Py_True : Py_False);
}

static PyObject *py_devices(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    char err[1024] = "";
    moevk_context_desc desc = {.error_message = err, .error_message_size = sizeof err};
    uint32_t count = 0;
    moevk_status st;
    Py_BEGIN_ALLOW_THREADS
    st = moevk_enumerate_devices(&desc, NULL, 0, &count);
    Py_END_ALLOW_THREADS
    if (st)
        return raise_status(st, err);
    moevk_device_info *infos = PyMem_Calloc(count ? count : 1, sizeof *infos);
    if (!infos)
        return PyErr_NoMemory();
    uint32_t got = count;
    Py_BEGIN_ALLOW_THREADS
    st = moevk_enumerate_devices(&desc, infos, count, &got);
    Py_END_ALLOW_THREADS
    if (st) {
        PyMem_Free(infos);
        return raise_status(st, err);
    }
    PyObject *list = PyList_New(0);
    for (uint32_t i = 0; list && i < got && i < count; i++) {
        PyObject *d = device_dict(&infos[i], i);
        if (!d || PyList_Append(list, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(d);
    }
    PyMem_Free(infos);
    return list;
}

/* ---- Context --------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    moevk_context *ctx;
    PyThread_type_lock lock;
} ContextObject;

static PyTypeObject ContextType;

static int context_init(ContextObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"device", "validation", NULL};
    PyObject *device = Py_None;
    int validation = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Op:Context", kwlist, &device, &validation))
        return -1;
    if (self->ctx) {
        PyErr_SetString(PyExc_RuntimeError, "Context.__init__ called twice");
        return -1;
    }
    char dev[64];
    const char *dname = NULL;
    if (PyLong_Check(device)) {
        long i = PyLong_AsLong(device);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (i < 0) {
            invalid("device = %ld: a device index is 0 or more", i);
            return -1;
        }
        snprintf(dev, sizeof dev, "%ld", i);
        dname = dev;
    } else if (PyUnicode_Check(device)) {
        if (!(dname = PyUnicode_AsUTF8(device)))
            return -1;
    } else if (device != Py_None) {
        PyErr_SetString(PyExc_TypeError, "device: an index (int), a name (str) or None");
        return -1;
    }
    if (!self->lock && !(self->lock = PyThread_allocate_lock())) {
        PyErr_NoMemory();
        return -1;
    }
    char err[1024] = "";
    moevk_status st;
    moevk_context *ctx = NULL;
    Py_BEGIN_ALLOW_THREADS
    st = mvk_tool_context(dname, validation, &ctx, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (st) {
        raise_status(st, err);
        return -1;
    }
    self->ctx = ctx;
    return 0;
}

static void context_dealloc(ContextObject *self)
{
    /* layers hold a reference: none is left */
    moevk_context_destroy(self->ctx);
    if (self->lock)
        PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int context_ready(ContextObject *self)
{
    if (!self->ctx) {
        PyErr_SetString(PyExc_RuntimeError, "the Context is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *context_device(ContextObject *self, void *closure)
{
    (void)closure;
    if (!context_ready(self))
        return NULL;
    return device_dict(moevk_context_device_info(self->ctx), 0);
}

static PyObject *context_validation_messages(ContextObject *self, void *closure)
{
    (void)closure;
    if (!context_ready(self))
        return NULL;
    uint32_t n;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    n = moevk_context_validation_messages(self->ctx);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLong(n);
}

static PyGetSetDef context_getset[] = {
    {"device", (getter)context_device, NULL, "the device's description (a dict)", NULL},
    {"validation_messages", (getter)context_validation_messages, NULL,
     "validation-layer messages so far (contexts made with validation=True)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "moevk._moevk.Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Context(device=None, validation=False): a moevk_context on one Vulkan device",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)context_init,
    .tp_dealloc = (destructor)context_dealloc,
    .tp_getset = context_getset,
};

/* ---- layer descriptions from dicts --------------------------------------- */

typedef enum { F_U32, F_BOOL, F_F32, F_F64, F_ROUTING, F_ACT, F_GROUP, F_SCORE, F_DTYPE, F_FLAG } field_kind;

typedef struct {
    const char *name;
    field_kind kind;
    size_t offset; /* F_FLAG: the bit */
} field_def;

#define FD(n, k) {#n, k, offsetof(moevk_layer_desc, n)}
static const field_def fields[] = {
    FD(hidden, F_U32),
    FD(ffn, F_U32),
    FD(num_experts, F_U32),
    FD(top_k, F_U32),
    FD(routing, F_ROUTING),
    FD(activation, F_ACT),
    FD(norm_topk_prob, F_BOOL),
    FD(n_group, F_U32),
    FD(topk_group, F_U32),
    FD(routed_scaling_factor, F_F32),
    FD(capacity_factor, F_F32),
    FD(swiglu_alpha, F_F32),
    FD(swiglu_limit, F_F32),
    FD(weight_dtype, F_DTYPE),
    FD(router_dtype, F_DTYPE),
    FD(num_shared, F_U32),
    FD(shared_ffn, F_U32),
    FD(quantize_dtype, F_DTYPE),
    FD(quantize_threads, F_U32),
    FD(group_score, F_GROUP),
    FD(score_fn, F_SCORE),
    FD(shared_sink, F_BOOL),
    FD(capacity_fraction, F_F64),
    FD(drop_renorm_eps, F_F32),
    FD(norm_p, F_F32),
    FD(norm_min, F_F32),
    FD(shared_scale, F_F32),
    FD(num_zero_experts, F_U32),
    FD(softcap_gate, F_F32),
    FD(softcap_up, F_F32),
    FD(shared_activation, F_ACT),
    FD(shared_swiglu_limit, F_F32),
    FD(norm_eps, F_F32),
    FD(router_softcap, F_F32),
    FD(select_on_logits, F_BOOL),
    FD(jitter_eps, F_F32),
    FD(router_norm_eps, F_F32),
    FD(router_input_factor, F_F32),
    FD(expert_norm_eps, F_F32),
    {"batch_invariant", F_FLAG, MOEVK_LAYER_BATCH_INVARIANT},
    {"weights_on_input", F_FLAG, MOEVK_LAYER_WEIGHTS_ON_INPUT},
};
#undef FD

static const char *const routing_names[] = {"softmax_topk", "topk_softmax", "sigmoid_grouped",
                                            "expert_choice", "sparsemixer"};
static const char *const act_names[] = {"swiglu",       "geglu",          "geglu_tanh",
                                        "swiglu_oai",   "relu",           "gelu",
                                        "relu2",        "swiglu_clamp",   "swiglu_softcap",
                                        "swiglu_postclamp"};
static const char *const group_names[] = {"top2_sum", "max"};
static const char *const score_names[] = {"sigmoid", "sqrtsoftplus"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* An enum value by name (or as an int in range) into *out. */
static int enum_value(PyObject *v, const char *key, const char *const *names, size_t n,
                      uint32_t *out)
{
    if (PyUnicode_Check(v)) {
        const char *s = PyUnicode_AsUTF8(v);
        if (!s)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(s, names[i])) {
                *out = (uint32_t)i;
                return 0;
            }
        char list[512] = "";
        for (size_t i = 0; i < n; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     names[i]);
        invalid("config['%s'] = '%s' is not one of %s", key, s, list);
        return -1;
    }
    if (PyLong_Check(v) && !PyBool_Check(v)) {
        long i = PyLong_AsLong(v);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (i < 0 || (size_t)i >= n) {
            invalid("config['%s'] = %ld is out of range (0 .. %zu)", key, i, n - 1);
            return -1;
        }
        *out = (uint32_t)i;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "config['%s']: a name (str) or an int", key);
    return -1;
}

static int dtype_value(PyObject *v, const char *key, moevk_dtype *out)
{
    if (PyUnicode_Check(v)) {
        const char *s = PyUnicode_AsUTF8(v);
        if (!s)
            return -1;
        int dt = moevk_dtype_from_name(s);
        if (dt < 0) {
            invalid("config['%s'] = '%s' is no moevk format (f32, f16, bf16, q8_0, q4_k, ...)",
                    key, s);
            return -1;
        }
        *out = (moevk_dtype)dt;
        return 0;
    }
    if (PyLong_Check(v) && !PyBool_Check(v)) {
        long i = PyLong_AsLong(v);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (i < 0 || !strcmp(moevk_dtype_name((moevk_dtype)i), "unknown")) {
            invalid("config['%s'] = %ld is no moevk_dtype", key, i);
            return -1;
        }
        *out = (moevk_dtype)i;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "config['%s']: a format name (str) or a moevk_dtype (int)",
                 key);
    return -1;
}

/* Set one field of d from v. */
static int set_field(moevk_layer_desc *d, const field_def *f, PyObject *v)
{
    char *base = (char *)d;
    switch (f->kind) {
    case F_U32: {
        if (!PyLong_Check(v)) {
            PyErr_Format(PyExc_TypeError, "config['%s']: an int, not %s", f->name,
                         Py_TYPE(v)->tp_name);
            return -1;
        }
        int overflow = 0;
        long long i = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (overflow || i < 0 || i > (long long)UINT32_MAX) {
            PyObject *r = PyObject_Repr(v);
            invalid("config['%s'] = %s is out of range (0 .. %u)", f->name,
                    r ? PyUnicode_AsUTF8(r) : "?", UINT32_MAX);
            Py_XDECREF(r);
            return -1;
        }
        uint32_t u = (uint32_t)i;
        memcpy(base + f->offset, &u, sizeof u);
        return 0;
    }
    case F_BOOL:
    case F_FLAG: {
        int b = PyObject_IsTrue(v);
        if (b < 0)
            return -1;
        if (f->kind == F_BOOL)
            memcpy(base + f->offset, &b, sizeof b);
        else if (b)
            d->flags |= (uint32_t)f->offset;
        else
            d->flags &= ~(uint32_t)f->offset;
        return 0;
    }
    case F_F32: {
        double x = PyFloat_AsDouble(v);
        if (x == -1.0 && PyErr_Occurred())
            return -1;
        float fl = (float)x;
        memcpy(base + f->offset, &fl, sizeof fl);
        return 0;
    }
    case F_F64: {
        double x = PyFloat_AsDouble(v);
        if (x == -1.0 && PyErr_Occurred())
            return -1;
        memcpy(base + f->offset, &x, sizeof x);
        return 0;
    }
    case F_ROUTING:
    case F_ACT:
    case F_GROUP:
    case F_SCORE: {
        uint32_t e;
        const char *const *names = f->kind == F_ROUTING ? routing_names
                                   : f->kind == F_ACT   ? act_names
                                   : f->kind == F_GROUP ? group_names
                                                        : score_names;
        size_t n = f->kind == F_ROUTING ? COUNT(routing_names)
                   : f->kind == F_ACT   ? COUNT(act_names)
                   : f->kind == F_GROUP ? COUNT(group_names)
                                        : COUNT(score_names);
        if (enum_value(v, f->name, names, n, &e))
            return -1;
        int ev = (int)e; /* the enums are int-sized */
        memcpy(base + f->offset, &ev, sizeof ev);
        if (f->offset == offsetof(moevk_layer_desc, shared_activation))
            d->flags |= MOEVK_LAYER_SHARED_ACTIVATION;
        return 0;
    }
    case F_DTYPE: {
        moevk_dtype dt;
        if (dtype_value(v, f->name, &dt))
            return -1;
        memcpy(base + f->offset, &dt, sizeof dt);
        if (f->offset == offsetof(moevk_layer_desc, quantize_dtype))
            d->flags |= MOEVK_LAYER_QUANTIZE;
        return 0;
    }
    }
    return 0;
}

static const char *routing_name(int r)
{
    return r >= 0 && (size_t)r < COUNT(routing_names) ? routing_names[r] : "unknown";
}
static const char *act_name(int a)
{
    return a >= 0 && (size_t)a < COUNT(act_names) ? act_names[a] : "unknown";
}

/* The device-side formats of d (after quantisation), as `moevk run` says. */
static void device_formats(const moevk_layer_desc *d, moevk_layer_desc *dev)
{
    mvk_layer_desc_defaults(d, dev);
    mvk_matrix_kind kind[4];
    mvk_layer_matrices(dev, kind);
    dev->experts.gate_up_dtype = kind[0].target;
    dev->experts.down_dtype = kind[1].target;
    dev->shared.gate_up_dtype = kind[2].target;
    dev->shared.down_dtype = kind[3].target;
    dev->flags |= MOEVK_LAYER_MATRIX_DTYPES;
}

/* vram_budget (bytes as an int, or a string as `moevk run --vram-budget`
 * takes: "512M", "25%") into d's flags and budget. */
static int apply_budget(moevk_layer_desc *d, PyObject *v, int import_host)
{
    if (v == Py_None)
        return 0;
    uint64_t budget = 0;
    if (PyLong_Check(v) && !PyBool_Check(v)) {
        int overflow = 0;
        long long i = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (overflow || i < 0) {
            invalid("vram_budget is out of range: bytes (0 or more) or a string such as '50%%'");
            return -1;
        }
        budget = (uint64_t)i;
    } else if (PyUnicode_Check(v)) {
        const char *s = PyUnicode_AsUTF8(v);
        if (!s)
            return -1;
        moevk_layer_desc dev;
        device_formats(d, &dev);
        char why[512] = "";
        if (mvk_parse_budget(s, mvk_desc_routed_bytes(&dev), &budget, why, sizeof why)) {
            invalid("vram_budget = '%s': %s", s, why);
            return -1;
        }
    } else {
        PyErr_SetString(PyExc_TypeError, "vram_budget: bytes (int), a string such as '50%' or None");
        return -1;
    }
    mvk_desc_set_budget(d, budget);
    if (import_host && !(d->flags & MOEVK_LAYER_QUANTIZE))
        d->flags |= MOEVK_LAYER_IMPORT_HOST_EXPERTS;
    return 0;
}

/* ---- Layer ----------------------------------------------------------------- */

/* the weight arrays a layer holds (buffer views kept for its lifetime: the
 * cpu backend reads them at every pass) */
enum {
    W_ROUTER,
    W_ROUTER_BIAS,
    W_CORRECTION_BIAS,
    W_GATE,
    W_UP,
    W_DOWN,
    W_GATE_BIAS,
    W_UP_BIAS,
    W_DOWN_BIAS,
    W_S_GATE,
    W_S_UP,
    W_S_DOWN,
    W_S_GATE_BIAS,
    W_S_UP_BIAS,
    W_S_DOWN_BIAS,
    W_SHARED_GATE,
    W_OUTPUT_BIAS,
    W_ROUTER_INPUT_SCALE,
    W_EXPERT_NORM_WEIGHT,
    W_EXPERT_WEIGHT_SCALE,
    W_COUNT
};
static const char *const weight_names[W_COUNT] = {
    "router_weight",     "router_bias",           "correction_bias",
    "gate",              "up",                    "down",
    "gate_bias",         "up_bias",               "down_bias",
    "shared_experts_gate", "shared_experts_up",   "shared_experts_down",
    "shared_experts_gate_bias", "shared_experts_up_bias", "shared_experts_down_bias",
    "shared_gate",       "output_bias",
    "router_input_scale", "expert_norm_weight",   "expert_weight_scale",
};

typedef struct {
    PyObject_HEAD
    ContextObject *context; /* NULL for backends without one */
    PyThread_type_lock own_lock;
    const mvk_backend *b;
    void *dev, *L;
    mvk_backend_info info;
    moevk_layer_desc desc;
    mvk_model_block *block; /* from a checkpoint, or NULL */
    Py_buffer views[W_COUNT];
    int have_view[W_COUNT];
    double stage_ms[MOEVK_STAGE_COUNT];
    uint32_t last_T;
    int created_cf; /* expert_capacity layers: created for desc.capacity_factor */
} LayerObject;

static PyTypeObject LayerType;

static PyThread_type_lock layer_lock(LayerObject *l)
{
    return l->context ? l->context->lock : l->own_lock;
}

static void layer_dealloc(LayerObject *self)
{
    if (self->b) {
        PyThread_type_lock lk = layer_lock(self);
        if (lk && !PyThread_acquire_lock(lk, NOWAIT_LOCK)) {
            /* another thread's pass on the context: wait without the GIL */
            Py_BEGIN_ALLOW_THREADS
            PyThread_acquire_lock(lk, WAIT_LOCK);
            Py_END_ALLOW_THREADS
        }
        if (self->L)
            self->b->destroy(self->L);
        if (self->dev)
            self->b->close(self->dev);
        if (lk)
            PyThread_release_lock(lk);
    }
    for (int i = 0; i < W_COUNT; i++)
        if (self->have_view[i])
            PyBuffer_Release(&self->views[i]);
    if (self->block) {
        mvk_model_block_close(self->block);
        PyMem_RawFree(self->block);
    }
    if (self->own_lock)
        PyThread_free_lock(self->own_lock);
    Py_XDECREF(self->context);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject LayerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "moevk._moevk.Layer",
    .tp_basicsize = sizeof(LayerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a layer on one backend (made by create_layer or load_layer)",
    .tp_dealloc = (destructor)layer_dealloc,
};

/* A new layer object on `backend` (with `context` for vulkan). */
static LayerObject *layer_new(PyObject *context, const char *backend)
{
    const mvk_backend *b = mvk_backend_find(backend);
    if (!b) {
        invalid("backend '%s' is not one of %s", backend, mvk_backend_list(", ").s);
        return NULL;
    }
    char why[512] = "";
    if (!b->available(why, sizeof why)) {
        raise_status(MOEVK_ERROR_UNSUPPORTED, why);
        return NULL;
    }
    int vulkan = !strcmp(b->name, "vulkan");
    if (context != Py_None && !PyObject_TypeCheck(context, &ContextType)) {
        PyErr_SetString(PyExc_TypeError, "context: a moevk.Context or None");
        return NULL;
    }
    if (vulkan && context == Py_None) {
        invalid("backend 'vulkan' needs a context");
        return NULL;
    }
    if (vulkan && !context_ready((ContextObject *)context))
        return NULL;
    LayerObject *l = PyObject_New(LayerObject, &LayerType);
    if (!l)
        return NULL;
    /* PyObject_New leaves the fields uninitialised */
    memset((char *)l + offsetof(LayerObject, context), 0,
           sizeof(LayerObject) - offsetof(LayerObject, context));
    if (vulkan) {
        Py_INCREF(context);
        l->context = (ContextObject *)context;
    } else if (!(l->own_lock = PyThread_allocate_lock())) {
        Py_DECREF(l);
        PyErr_NoMemory();
        return NULL;
    }
    l->b = b;
    return l;
}

/* Open the backend's device and create the layer of l->desc (GIL released,
 * the lock held); NULL and the exception set on failure. */
static LayerObject *layer_start(LayerObject *l)
{
    char err[1024] = "";
    moevk_status st = moevk_layer_desc_check(&l->desc, err, sizeof err);
    if (st) {
        Py_DECREF(l);
        return (LayerObject *)raise_status(st, err);
    }
    const mvk_backend_opts bo = {.native = l->context ? l->context->ctx : NULL};
    PyThread_type_lock lk = layer_lock(l);
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(lk, WAIT_LOCK);
    st = l->b->open(&bo, &l->dev, &l->info, err, sizeof err);
    if (!st)
        st = l->b->create(l->dev, &l->desc, NULL, &l->L, err, sizeof err);
    PyThread_release_lock(lk);
    Py_END_ALLOW_THREADS
    if (st) {
        Py_DECREF(l);
        return (LayerObject *)raise_status(st, err);
    }
    return l;
}

/* Bytes a weight must have (its elements in *elems), its shape in words into
 * shape. */
static uint64_t weight_bytes(const moevk_layer_desc *d, int w, char *shape, size_t n,
                             uint64_t *elems)
{
    const uint64_t H = d->hidden, F = d->ffn, E = d->num_experts;
    const uint64_t Er = E >= d->num_zero_experts ? E - d->num_zero_experts : 0;
    const uint64_t S = d->num_shared, Fs = d->shared_ffn ? d->shared_ffn : d->ffn;
    const moevk_dtype wd = d->weight_dtype, rd = d->router_dtype;
    uint64_t rows = 0, cols = 0, count = 1;
    moevk_dtype dt = MOEVK_DTYPE_F32;
    switch (w) {
    case W_ROUTER: rows = E, cols = H, dt = rd; break;
    case W_ROUTER_BIAS:
    case W_CORRECTION_BIAS: rows = 1, cols = E; break;
    case W_GATE:
    case W_UP: count = Er, rows = F, cols = H, dt = wd; break;
    case W_DOWN: count = Er, rows = H, cols = F, dt = wd; break;
    case W_GATE_BIAS:
    case W_UP_BIAS: count = Er, rows = 1, cols = F; break;
    case W_DOWN_BIAS: count = Er, rows = 1, cols = H; break;
    case W_S_GATE:
    case W_S_UP: count = S, rows = Fs, cols = H, dt = wd; break;
    case W_S_DOWN: count = S, rows = H, cols = Fs, dt = wd; break;
    case W_S_GATE_BIAS:
    case W_S_UP_BIAS: count = S, rows = 1, cols = Fs; break;
    case W_S_DOWN_BIAS: count = S, rows = 1, cols = H; break;
    case W_SHARED_GATE: rows = S, cols = H, dt = rd; break;
    case W_OUTPUT_BIAS:
    case W_ROUTER_INPUT_SCALE:
    case W_EXPERT_NORM_WEIGHT: rows = 1, cols = H; break;
    case W_EXPERT_WEIGHT_SCALE: rows = 1, cols = E; break;
    }
    if (count > 1 || w == W_GATE || w == W_UP || w == W_DOWN || w == W_S_GATE || w == W_S_UP ||
        w == W_S_DOWN)
        snprintf(shape, n, "[%llu, %llu, %llu] of %s", (unsigned long long)count,
                 (unsigned long long)rows, (unsigned long long)cols, moevk_dtype_name(dt));
    else if (rows > 1 || w == W_ROUTER || w == W_SHARED_GATE)
        snprintf(shape, n, "[%llu, %llu] of %s", (unsigned long long)rows,
                 (unsigned long long)cols, moevk_dtype_name(dt));
    else
        snprintf(shape, n, "[%llu] of %s", (unsigned long long)cols, moevk_dtype_name(dt));
    *elems = count * rows * cols;
    return count * rows * moevk_dtype_row_bytes(dt, cols);
}

static PyObject *py_create_layer(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"context", "backend", "config", "weights", "vram_budget", NULL};
    PyObject *context, *config, *weights, *budget = Py_None;
    const char *backend;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OsO!O!|O:create_layer", kwlist, &context,
                                     &backend, &PyDict_Type, &config, &PyDict_Type, &weights,
                                     &budget))
        return NULL;
    LayerObject *l = layer_new(context, backend);
    if (!l)
        return NULL;
    moevk_layer_desc *d = &l->desc;
    d->router_dtype = (moevk_dtype)-1; /* not given: the weights' */
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(config, &pos, &key, &value)) {
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (!k) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "config keys are strings");
            goto fail;
        }
        size_t i = 0;
        while (i < COUNT(fields) && strcmp(fields[i].name, k))
            i++;
        if (i == COUNT(fields)) {
            invalid("config['%s']: no such field of moevk_layer_desc", k);
            goto fail;
        }
        if (set_field(d, &fields[i], value))
            goto fail;
    }
    if ((int)d->router_dtype == -1)
        d->router_dtype = MOEVK_DTYPE_F32;
    pos = 0;
    while (PyDict_Next(weights, &pos, &key, &value)) {
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (!k) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "weights keys are strings");
            goto fail;
        }
        int w = 0;
        while (w < W_COUNT && strcmp(weight_names[w], k))
            w++;
        if (w == W_COUNT) {
            invalid("weights['%s']: no such weight (router_weight, gate, up, down, ...)", k);
            goto fail;
        }
        if (value == Py_None)
            continue;
        if (PyObject_GetBuffer(value, &l->views[w], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            goto fail;
        l->have_view[w] = 1;
        char shape[160];
        uint64_t elems = 0;
        const uint64_t want = weight_bytes(d, w, shape, sizeof shape, &elems);
        if (elems == 0 && (w >= W_S_GATE && w <= W_SHARED_GATE) && d->num_shared == 0) {
            invalid("weights['%s'] is given, but num_shared = 0", k);
            goto fail;
        }
        const char *f = l->views[w].format ? l->views[w].format : "B";
        if (*f == '<' || *f == '=' || *f == '@')
            f++;
        const char *need = strstr(shape, "of f32") ? "f" : strstr(shape, "of f16") ? "e" : NULL;
        if (need && strcmp(f, need)) {
            invalid("weights['%s'] has items of format '%s': %s wants '%s'", k, f, shape, need);
            goto fail;
        }
        /* a zero dimension: the library's check names the field */
        if (elems != 0 && (uint64_t)l->views[w].len != want) {
            if (want == 0)
                invalid("weights['%s']: %s is not a whole number of the format's blocks", k,
                        shape);
            else
                invalid("weights['%s'] has %lld bytes; %s is %llu bytes", k,
                        (long long)l->views[w].len, shape, (unsigned long long)want);
            goto fail;
        }
    }
    const void *p[W_COUNT];
    for (int w = 0; w < W_COUNT; w++)
        p[w] = l->have_view[w] ? l->views[w].buf : NULL;
    d->router_weight = p[W_ROUTER];
    d->router_bias = p[W_ROUTER_BIAS];
    d->correction_bias = p[W_CORRECTION_BIAS];
    d->experts.gate = p[W_GATE];
    d->experts.up = p[W_UP];
    d->experts.down = p[W_DOWN];
    d->experts.gate_bias = p[W_GATE_BIAS];
    d->experts.up_bias = p[W_UP_BIAS];
    d->experts.down_bias = p[W_DOWN_BIAS];
    d->shared.gate = p[W_S_GATE];
    d->shared.up = p[W_S_UP];
    d->shared.down = p[W_S_DOWN];
    d->shared.gate_bias = p[W_S_GATE_BIAS];
    d->shared.up_bias = p[W_S_UP_BIAS];
    d->shared.down_bias = p[W_S_DOWN_BIAS];
    d->shared_gate = p[W_SHARED_GATE];
    d->output_bias = p[W_OUTPUT_BIAS];
    d->router_input_scale = p[W_ROUTER_INPUT_SCALE];
    d->expert_norm_weight = p[W_EXPERT_NORM_WEIGHT];
    d->expert_weight_scale = p[W_EXPERT_WEIGHT_SCALE];
    if (apply_budget(d, budget, 0))
        goto fail;
    return (PyObject *)layer_start(l);
fail:
    Py_DECREF(l);
    return NULL;
}

static PyObject *py_load_layer(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"context", "backend", "path", "layer", "prefix", "decoder",
                             "quantize", "vram_budget", "batch_invariant", "part", NULL};
    PyObject *context, *path_obj, *budget = Py_None;
    const char *backend, *prefix = NULL, *quantize = NULL, *part = NULL;
    long layer = -1;
    int decoder = 0, batch_invariant = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OsO&|lzpzOpz:load_layer", kwlist, &context,
                                     &backend, PyUnicode_FSConverter, &path_obj, &layer, &prefix,
                                     &decoder, &quantize, &budget, &batch_invariant, &part))
        return NULL;
    LayerObject *l = layer_new(context, backend);
    if (!l) {
        Py_DECREF(path_obj);
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    char err[1024] = "";
    int rc;
    if (!(l->block = PyMem_RawCalloc(1, sizeof *l->block))) {
        Py_DECREF(path_obj);
        Py_DECREF(l);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    rc = mvk_model_block_open(l->block, path, layer, prefix, decoder, part, err, sizeof err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (rc) {
        PyObject *e = PyObject_CallFunction(exc_checkpoint, "s", err);
        if (e) {
            PyErr_SetObject(exc_checkpoint, e);
            Py_DECREF(e);
        }
        Py_DECREF(l);
        return NULL;
    }
    l->desc = l->block->layer.desc;
    moevk_layer_desc *d = &l->desc;
    if (batch_invariant)
        d->flags |= MOEVK_LAYER_BATCH_INVARIANT;
    if (quantize) {
        moevk_dtype dt;
        if (mvk_dtype_parse(quantize, 1, &dt)) {
            char names[512];
            invalid("quantize = '%s' is not one of %s", quantize,
                    mvk_dtype_names(1, names, sizeof names));
            Py_DECREF(l);
            return NULL;
        }
        d->flags |= MOEVK_LAYER_QUANTIZE;
        d->quantize_dtype = dt;
    }
    if (apply_budget(d, budget, 1)) {
        Py_DECREF(l);
        return NULL;
    }
    /* switch_transformers' expert_capacity binds per pass: the layer is
     * created at its first pass, for that pass's token count */
    if (l->block->layer.expert_capacity) {
        moevk_status st = moevk_layer_desc_check(d, err, sizeof err);
        if (st) {
            Py_DECREF(l);
            return raise_status(st, err);
        }
        const mvk_backend_opts bo = {.native = l->context ? l->context->ctx : NULL};
        PyThread_type_lock lk = layer_lock(l);
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(lk, WAIT_LOCK);
        st = l->b->open(&bo, &l->dev, &l->info, err, sizeof err);
        PyThread_release_lock(lk);
        Py_END_ALLOW_THREADS
        if (st) {
            Py_DECREF(l);
            return raise_status(st, err);
        }
        return (PyObject *)l;
    }
    return (PyObject *)layer_start(l);
}

/* A buffer of exactly `bytes` bytes, C-contiguous (writable when asked),
 * of item format fmt ('f', 'I', 'i'; NULL: any). */
static int get_buffer(PyObject *o, Py_buffer *v, int writable, const char *fmt, uint64_t bytes,
                      const char *name)
{
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT |
                                     (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    if ((fmt && strcmp(f, fmt)) || (uint64_t)v->len != bytes) {
        invalid("%s: %llu bytes of format '%s' wanted, got %lld of '%s'", name,
                (unsigned long long)bytes, fmt ? fmt : "any", (long long)v->len, f);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* (Re)create an expert_capacity layer for T tokens (lock held, no GIL). */
static moevk_status capacity_layer(LayerObject *l, uint32_t T, char *err, size_t n)
{
    const float cf = mvk_model_capacity_factor(&l->block->layer, T);
    if (l->L && l->created_cf && l->desc.capacity_factor == cf)
        return MOEVK_SUCCESS;
    if (l->L)
        l->b->destroy(l->L);
    l->L = NULL;
    l->desc.capacity_factor = cf;
    moevk_status st = l->b->create(l->dev, &l->desc, NULL, &l->L, err, n);
    l->created_cf = !st;
    return st;
}

/* layer.forward(x, T, y, ids, weights, rows, tokens_per_expert) -> (dropped,
 * load_balancing_loss, router_z_loss, routing_entropy); y None: routing
 * only (no statistics). */
static PyObject *layer_forward(LayerObject *self, PyObject *args)
{
    PyObject *xo, *yo, *io, *wo, *ro, *to;
    unsigned long T;
    if (!PyArg_ParseTuple(args, "OkOOOOO:forward", &xo, &T, &yo, &io, &wo, &ro, &to))
        return NULL;
    const moevk_layer_desc *d = &self->desc;
    const uint64_t H = d->hidden, K = moevk_routing_slots(d), E = d->num_experts;
    if (T == 0 || T > UINT32_MAX)
        return invalid("x has %lu tokens: 1 .. %u", T, UINT32_MAX);
    Py_buffer bx, by, bi, bw, br, bt;
    int hy = 0, hi = 0, hw = 0, hr = 0, ht = 0;
    PyObject *result = NULL;
    if (get_buffer(xo, &bx, 0, "f", (uint64_t)T * H * 4, "x"))
        return NULL;
    if (yo != Py_None && !(hy = !get_buffer(yo, &by, 1, "f", (uint64_t)T * H * 4, "y")))
        goto done;
    if (io != Py_None && !(hi = !get_buffer(io, &bi, 1, "I", (uint64_t)T * K * 4, "ids")))
        goto done;
    if (wo != Py_None && !(hw = !get_buffer(wo, &bw, 1, "f", (uint64_t)T * K * 4, "weights")))
        goto done;
    if (ro != Py_None && !(hr = !get_buffer(ro, &br, 1, "i", (uint64_t)T * K * 4, "rows")))
        goto done;
    if (to != Py_None &&
        !(ht = !get_buffer(to, &bt, 1, "I", E * 4, "tokens_per_expert")))
        goto done;
    moevk_routing_stats stats = {.tokens_per_expert = ht ? bt.buf : NULL};
    double stage[MOEVK_STAGE_COUNT] = {0};
    const mvk_backend_out out = {.y = hy ? by.buf : NULL,
                                 .ids = hi ? bi.buf : NULL,
                                 .weights = hw ? bw.buf : NULL,
                                 .rows = hr ? br.buf : NULL,
                                 .stats = hy ? &stats : NULL,
                                 .stage_ms = stage};
    char err[1024] = "";
    moevk_status st = MOEVK_SUCCESS;
    PyThread_type_lock lk = layer_lock(self);
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(lk, WAIT_LOCK);
    if (self->block && self->block->layer.expert_capacity)
        st = capacity_layer(self, (uint32_t)T, err, sizeof err);
    if (!st)
        st = self->b->forward(self->L, (uint32_t)T, bx.buf, &out, err, sizeof err);
    PyThread_release_lock(lk);
    Py_END_ALLOW_THREADS
    if (st) {
        raise_status(st, err);
        goto done;
    }
    if (hy) {
        memcpy(self->stage_ms, stage, sizeof stage);
        self->last_T = (uint32_t)T;
    }
    result = Py_BuildValue("(Kddd)", (unsigned long long)stats.dropped,
                           stats.load_balancing_loss, stats.router_z_loss,
                           stats.routing_entropy);
done:
    PyBuffer_Release(&bx);
    if (hy)
        PyBuffer_Release(&by);
    if (hi)
        PyBuffer_Release(&bi);
    if (hw)
        PyBuffer_Release(&bw);
    if (hr)
        PyBuffer_Release(&br);
    if (ht)
        PyBuffer_Release(&bt);
    return result;
}

static PyObject *layer_stage_times(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < MOEVK_STAGE_COUNT; i++) {
        PyObject *v = PyFloat_FromDouble(self->stage_ms[i]);
        if (!v || PyDict_SetItemString(d, moevk_stage_name((moevk_stage)i), v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *layer_memory(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    mvk_backend_memory m;
    memset(&m, 0, sizeof m);
    if (self->b->memory && self->L) {
        PyThread_type_lock lk = layer_lock(self);
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(lk, WAIT_LOCK);
        self->b->memory(self->L, self->last_T, &m);
        PyThread_release_lock(lk);
        Py_END_ALLOW_THREADS
    }
    const moevk_cache_stats *c = &m.cache;
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:O,s:I,s:I,s:K,s:K,s:K,s:K,s:K,s:K}", "device_weight_bytes",
        (unsigned long long)m.weights, "scratch_bytes", (unsigned long long)m.scratch,
        "host_weight_bytes", (unsigned long long)m.host_weights, "host_imported_bytes",
        (unsigned long long)c->host_imported_bytes, "expert_device_bytes",
        (unsigned long long)c->expert_device_bytes, "budgeted", m.budgeted ? Py_True : Py_False,
        "device_slots", c->device_slots, "resident_experts", c->resident_experts, "passes",
        (unsigned long long)c->passes, "hits", (unsigned long long)c->hits, "misses",
        (unsigned long long)c->misses, "promotions", (unsigned long long)c->promotions,
        "evictions", (unsigned long long)c->evictions, "bytes_moved",
        (unsigned long long)c->bytes_moved);
}

/* What the layer is: its effective description and where it came from. */
static PyObject *layer_info(LayerObject *self, PyObject *noargs)
{
    (void)noargs;
    const moevk_layer_desc *d = &self->desc;
    moevk_layer_desc dev;
    device_formats(d, &dev);
    char formats[200];
    mvk_desc_formats(&dev, formats, sizeof formats);
    const mvk_model_layer *ml = self->block ? &self->block->layer : NULL;
    return Py_BuildValue(
        "{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:s,s:s,s:O,s:I,s:I,s:I,s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:K,s:f}",
        "backend", self->b->name, "device", self->info.desc, "hidden", d->hidden, "ffn",
        d->ffn, "num_experts", d->num_experts, "top_k", d->top_k, "slots",
        moevk_routing_slots(d), "routing",
        routing_name((int)d->routing), "activation", act_name((int)d->activation),
        "norm_topk_prob", d->norm_topk_prob ? Py_True : Py_False, "num_shared", d->num_shared,
        "shared_ffn", d->num_shared ? (d->shared_ffn ? d->shared_ffn : d->ffn) : 0, "n_group",
        d->n_group, "num_zero_experts", d->num_zero_experts, "formats", formats, "weight_dtype",
        moevk_dtype_name(d->weight_dtype), "arch", ml ? mvk_model_block_arch(self->block) : "",
        "prefix", ml ? ml->prefix : "", "layout", ml && ml->layout ? ml->layout : "", "quant",
        ml ? ml->quant : "", "expert_capacity",
        (unsigned long long)(ml ? ml->expert_capacity : 0), "capacity_factor",
        (double)d->capacity_factor);
}

static PyMethodDef layer_methods[] = {
    {"forward", (PyCFunction)layer_forward, METH_VARARGS,
     "forward(x, T, y, ids, weights, rows, tokens_per_expert) -> (dropped, lbl, z, entropy)"},
    {"stage_times", (PyCFunction)layer_stage_times, METH_NOARGS,
     "GPU milliseconds per stage of the last pass"},
    {"memory", (PyCFunction)layer_memory, METH_NOARGS, "device and host bytes, cache counters"},
    {"info", (PyCFunction)layer_info, METH_NOARGS, "the layer's description"},
    {NULL, NULL, 0, NULL},
};

/* ---- the module ------------------------------------------------------------ */

static PyObject *py_backends(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *list = PyList_New(0);
    for (uint32_t i = 0; list; i++) {
        const mvk_backend *b = mvk_backend_at(i);
        if (!b)
            break;
        char why[512] = "";
        int ok = b->available(why, sizeof why);
        PyObject *t = Py_BuildValue("(sOs)", b->name, ok ? Py_True : Py_False, why);
        if (!t || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_CLEAR(list);
        } else {
            Py_DECREF(t);
        }
    }
    return list;
}

static PyMethodDef module_methods[] = {
    {"devices", py_devices, METH_NOARGS, "every Vulkan device (a list of dicts)"},
    {"backends", py_backends, METH_NOARGS, "(name, available, description) of each backend"},
    {"create_layer", (PyCFunction)(void (*)(void))py_create_layer, METH_VARARGS | METH_KEYWORDS,
     "create_layer(context, backend, config, weights, vram_budget=None)"},
    {"load_layer", (PyCFunction)(void (*)(void))py_load_layer, METH_VARARGS | METH_KEYWORDS,
     "load_layer(context, backend, path, layer=-1, prefix=None, decoder=False, quantize=None, "
     "vram_budget=None, batch_invariant=False, part=None)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moevk_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "moevk._moevk",
    .m_doc = "The CPython extension under the moevk package (use moevk, not this).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__moevk(void);
PyMODINIT_FUNC PyInit__moevk(void)
{
    LayerType.tp_methods = layer_methods;
    if (PyType_Ready(&ContextType) < 0 || PyType_Ready(&LayerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moevk_module);
    if (!m)
        return NULL;
    char qual[96];
    snprintf(qual, sizeof qual, "moevk.%s", exc_names[0].name);
    exc_status[0] = PyErr_NewExceptionWithDoc(qual, exc_names[0].doc, PyExc_RuntimeError, NULL);
    if (!exc_status[0] || PyModule_AddObjectRef(m, exc_names[0].name, exc_status[0]) < 0 ||
        PyObject_SetAttrString(exc_status[0], "status", Py_None) < 0)
        goto fail;
    for (int i = 1; i < N_STATUS; i++) {
        /* a second base where Python has the same kind of error */
        PyObject *extra = i == -MOEVK_ERROR_INVALID_ARGUMENT    ? PyExc_ValueError
                          : i == -MOEVK_ERROR_OUT_OF_HOST_MEMORY ? PyExc_MemoryError
                          : i == -MOEVK_ERROR_TIMEOUT            ? PyExc_TimeoutError
                                                                 : NULL;
        PyObject *bases = extra ? PyTuple_Pack(2, exc_status[0], extra)
                                : PyTuple_Pack(1, exc_status[0]);
        if (!bases)
            goto fail;
        snprintf(qual, sizeof qual, "moevk.%s", exc_names[i].name);
        exc_status[i] = PyErr_NewExceptionWithDoc(qual, exc_names[i].doc, bases, NULL);
        Py_DECREF(bases);
        if (!exc_status[i] || PyModule_AddObjectRef(m, exc_names[i].name, exc_status[i]) < 0)
            goto fail;
        /* the class's status (raise_status sets it on each instance too) */
        PyObject *code = PyLong_FromLong(-i);
        int bad = !code || PyObject_SetAttrString(exc_status[i], "status", code) < 0;
        Py_XDECREF(code);
        if (bad)
            goto fail;
    }
    {
        PyObject *bases = PyTuple_Pack(2, exc_status[0], PyExc_ValueError);
        if (!bases)
            goto fail;
        exc_checkpoint = PyErr_NewExceptionWithDoc(
            "moevk.CheckpointError",
            "A checkpoint could not be read as a MoE layer; the message names the file, key or "
            "tensor at fault.",
            bases, NULL);
        Py_DECREF(bases);
        if (!exc_checkpoint || PyModule_AddObjectRef(m, "CheckpointError", exc_checkpoint) < 0)
            goto fail;
    }
    if (PyModule_AddObjectRef(m, "Context", (PyObject *)&ContextType) < 0 ||
        PyModule_AddObjectRef(m, "Layer", (PyObject *)&LayerType) < 0 ||
        PyModule_AddIntConstant(m, "STAGE_COUNT", MOEVK_STAGE_COUNT) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
