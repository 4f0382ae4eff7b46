/* kdforge::AdderConv2d as an ONNX Runtime custom-op library (C, compiled on first use).
 *
 *   Y[n,o,i,j] = - sum_{c,u,v} | Xpad[n, c, i*s+u, j*s+v] - W[o,c,u,v] |
 *
 * ONNX Runtime loads this library through SessionOptions.register_custom_ops_library and calls
 * RegisterCustomOps. The PyPI onnxruntime wheel ships no C headers, so the few ABI pieces used
 * here are declared below: OrtApiBase, OrtCustomOp at struct version 16 (the first with
 * CreateKernelV2 / KernelComputeV2, which return a status instead of failing silently), and
 * OrtApi as a table of function pointers at the positions ONNX Runtime's C API has kept since it
 * added them (the table is append-only; onnxruntime_c_api.cc asserts every version's size).
 * The kernel reads the node's own `strides` and `pads` lists, so the file on disk is what runs.
 *
 * The node may come from anyone's file, and the kernel indexes memory without bounds checks, so
 * everything is checked first, as in kdforge/nn/adder_geometry.py: 2 strides >= 1 and 4 symmetric
 * pads >= 0 when the session is created; at every run, two inputs of rank 4, equal channel
 * counts, no empty dimension, a kernel that fits the padded input, and element counts whose
 * products do not overflow. A failed check is a status naming the node and the attribute or input,
 * which ONNX Runtime raises as an exception; never a signal.
 *
 * The kernel is the CPU algorithm of kdforge/nn/adder_cpu.py: blocks of output pixels of one
 * image gather their receptive fields into a small buffer, then the L1 distance of four pixels
 * to each filter, the inner loop over C*kh*kw vectorised by the compiler; OpenMP across blocks.
 * A kernel object is read-only after creation, so one session may run on many threads at once.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct OrtStatus OrtStatus;
typedef struct OrtValue OrtValue;
typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtCustomOpDomain OrtCustomOpDomain;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;

typedef struct OrtApiBase {
  const void* const* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)(void);
} OrtApiBase;

enum { ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2, ONNX_FLOAT = 1 };
enum { API_VERSION_NEEDED = 16 }; /* KernelInfo_GetNodeName (15), CreateKernelV2/KernelComputeV2 (16) */

/* positions in the OrtApi function table */
enum {
  API_CreateStatus = 0, API_CreateCustomOpDomain = 26, API_CustomOpDomain_Add = 27, API_AddCustomOpDomain = 28,
  API_GetTensorMutableData = 51, API_GetDimensionsCount = 61, API_GetDimensions = 62, API_GetTensorTypeAndShape = 65,
  API_KernelContext_GetInputCount = 88, API_KernelContext_GetInput = 90, API_KernelContext_GetOutput = 91,
  API_ReleaseStatus = 93, API_ReleaseTensorTypeAndShapeInfo = 99, API_KernelInfoGetAttributeArray_int64 = 163,
  API_KernelInfo_GetNodeName = 244,
};

typedef struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const struct OrtCustomOp* op, const void* api, const OrtKernelInfo* info);
  const char* (*GetName)(const struct OrtCustomOp* op);
  const char* (*GetExecutionProviderType)(const struct OrtCustomOp* op);
  int (*GetInputType)(const struct OrtCustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const struct OrtCustomOp* op);
  int (*GetOutputType)(const struct OrtCustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const struct OrtCustomOp* op);
  void (*KernelCompute)(void* kernel, OrtKernelContext* context);
  void (*KernelDestroy)(void* kernel);
  int (*GetInputCharacteristic)(const struct OrtCustomOp* op, size_t index);
  int (*GetOutputCharacteristic)(const struct OrtCustomOp* op, size_t index);
  int (*GetInputMemoryType)(const struct OrtCustomOp* op, size_t index);
  int (*GetVariadicInputMinArity)(const struct OrtCustomOp* op);
  int (*GetVariadicInputHomogeneity)(const struct OrtCustomOp* op);
  int (*GetVariadicOutputMinArity)(const struct OrtCustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const struct OrtCustomOp* op);
  OrtStatus* (*CreateKernelV2)(const struct OrtCustomOp* op, const void* api, const OrtKernelInfo* info, void** kernel);
  OrtStatus* (*KernelComputeV2)(void* kernel, OrtKernelContext* context);
  void* InferOutputShapeFn;
  int (*GetStartVersion)(const struct OrtCustomOp* op);
  int (*GetEndVersion)(const struct OrtCustomOp* op);
  void* later_fields[16]; /* anything newer: null */
} OrtCustomOp;

static const void* const* api;
#define CALL(index, type, ...) (((type)api[index])(__VA_ARGS__))

typedef OrtStatus* (*CreateStatusFn)(int, const char*);
typedef OrtStatus* (*GetArrayFn)(const OrtKernelInfo*, const char*, int64_t*, size_t*);
typedef OrtStatus* (*GetNameFn)(const OrtKernelInfo*, char*, size_t*);
typedef OrtStatus* (*GetCountFn)(const OrtKernelContext*, size_t*);
typedef OrtStatus* (*GetInputFn)(const OrtKernelContext*, size_t, const OrtValue**);
typedef OrtStatus* (*GetOutputFn)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**);
typedef OrtStatus* (*GetDataFn)(OrtValue*, void**);
typedef OrtStatus* (*GetShapeFn)(const OrtValue*, OrtTensorTypeAndShapeInfo**);
typedef OrtStatus* (*GetDimsCountFn)(const OrtTensorTypeAndShapeInfo*, size_t*);
typedef OrtStatus* (*GetDimsFn)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t);
typedef void (*ReleaseFn)(void*);

typedef struct {
  int64_t sh, sw, ph, pw;
  char name[128];
} AdderKernel;

#define TRY(expr)                  \
  do {                             \
    OrtStatus* status_ = (expr);   \
    if (status_) return status_;   \
  } while (0)

static OrtStatus* fail(const char* node, const char* format, int64_t a, int64_t b, int64_t c, int64_t d) {
  char message[512], detail[384];
  snprintf(detail, sizeof detail, format, (long long)a, (long long)b, (long long)c, (long long)d);
  snprintf(message, sizeof message, "kdforge::AdderConv2d node '%s': %s", node, detail);
  return CALL(API_CreateStatus, CreateStatusFn, ORT_INVALID_ARGUMENT, message);
}

/* An int64 list attribute of exactly `count` values; `fallback` where the node has none (ONNX's defaults). */
static OrtStatus* int_list(const OrtKernelInfo* info, const char* node, const char* name, int64_t* out, size_t count,
                           const int64_t* fallback) {
  size_t size = 0;
  OrtStatus* status = CALL(API_KernelInfoGetAttributeArray_int64, GetArrayFn, info, name, NULL, &size);
  if (status) { /* absent */
    CALL(API_ReleaseStatus, ReleaseFn, status);
    memcpy(out, fallback, count * sizeof(int64_t));
    return NULL;
  }
  if (size != count)
    return fail(node, name[0] == 's' ? "attribute 'strides' must hold %lld integers, it holds %lld"
                                     : "attribute 'pads' must hold %lld integers, it holds %lld", (int64_t)count, (int64_t)size, 0, 0);
  return CALL(API_KernelInfoGetAttributeArray_int64, GetArrayFn, info, name, out, &size);
}

static OrtStatus* create_kernel(const OrtCustomOp* op, const void* api_table, const OrtKernelInfo* info, void** out) {
  (void)op; (void)api_table;
  AdderKernel k;
  memset(&k, 0, sizeof k);
  size_t name_size = sizeof k.name;
  OrtStatus* status = CALL(API_KernelInfo_GetNodeName, GetNameFn, info, k.name, &name_size);
  if (status) { /* a name longer than the buffer: keep its start */
    CALL(API_ReleaseStatus, ReleaseFn, status);
    k.name[0] = '\0';
  }
  k.name[sizeof k.name - 1] = '\0';
  static const int64_t unit_strides[2] = {1, 1}, no_pads[4] = {0, 0, 0, 0};
  int64_t strides[2], pads[4];
  TRY(int_list(info, k.name, "strides", strides, 2, unit_strides));
  TRY(int_list(info, k.name, "pads", pads, 4, no_pads));
  if (strides[0] < 1 || strides[1] < 1)
    return fail(k.name, "attribute 'strides' must be 2 integers >= 1, got [%lld, %lld]", strides[0], strides[1], 0, 0);
  if (pads[0] < 0 || pads[1] < 0 || pads[2] < 0 || pads[3] < 0)
    return fail(k.name, "attribute 'pads' must be 4 integers >= 0, got [%lld, %lld, %lld, %lld]", pads[0], pads[1], pads[2], pads[3]);
  if (pads[0] != pads[2] || pads[1] != pads[3])
    return fail(k.name, "attribute 'pads' must be symmetric (top = bottom, left = right), got [%lld, %lld, %lld, %lld]",
                pads[0], pads[1], pads[2], pads[3]);
  k.sh = strides[0]; k.sw = strides[1]; k.ph = pads[0]; k.pw = pads[1];
  AdderKernel* kernel = (AdderKernel*)malloc(sizeof(AdderKernel));
  if (!kernel) return CALL(API_CreateStatus, CreateStatusFn, ORT_FAIL, "kdforge::AdderConv2d: out of memory");
  *kernel = k;
  *out = kernel;
  return NULL;
}

static OrtStatus* shape_of(const OrtValue* value, int64_t dims[4], size_t* rank) {
  OrtTensorTypeAndShapeInfo* info;
  TRY(CALL(API_GetTensorTypeAndShape, GetShapeFn, value, &info));
  OrtStatus* status = CALL(API_GetDimensionsCount, GetDimsCountFn, info, rank);
  if (!status && *rank == 4) status = CALL(API_GetDimensions, GetDimsFn, info, dims, 4);
  CALL(API_ReleaseTensorTypeAndShapeInfo, ReleaseFn, info);
  return status;
}

/* a * b where neither is negative, or -1 where it overflows int64 */
static int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  return (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) ? -1 : r;
}

static int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  return (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) ? -1 : r;
}

#define PIXELS_PER_BLOCK 32

/* The output size of one axis, or -1 where the kernel does not fit the padded input or a sum overflows. */
static int64_t output_size(int64_t size, int64_t pad, int64_t kernel, int64_t stride) {
  const int64_t padded = checked_add(size, checked_mul(2, pad));
  return (padded < 0 || padded < kernel) ? -1 : (padded - kernel) / stride + 1;
}

static void adder_forward(const float* x, const float* w, float* y, float* scratch, int64_t n_img, int64_t c_in, int64_t h,
                          int64_t wd, int64_t n_out, int64_t kh, int64_t kw, const AdderKernel* k, int64_t ho, int64_t wo) {
  const int64_t pixels = ho * wo, k_len = c_in * kh * kw;
  const int64_t blocks = (pixels + PIXELS_PER_BLOCK - 1) / PIXELS_PER_BLOCK;
#pragma omp parallel
  {
#ifdef _OPENMP
    float* cols = scratch + (int64_t)omp_get_thread_num() * PIXELS_PER_BLOCK * k_len;
#else
    float* cols = scratch;
#endif
#pragma omp for schedule(static)
    for (int64_t task = 0; task < n_img * blocks; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * PIXELS_PER_BLOCK;
      const int64_t p1 = p0 + PIXELS_PER_BLOCK < pixels ? p0 + PIXELS_PER_BLOCK : pixels;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = p / wo, j = p % wo;
        float* row = cols + (p - p0) * k_len;
        for (int64_t c = 0; c < c_in; ++c)
          for (int64_t u = 0; u < kh; ++u) {
            const int64_t hi = i * k->sh - k->ph + u;
            for (int64_t v = 0; v < kw; ++v) {
              const int64_t wj = j * k->sw - k->pw + v;
              row[(c * kh + u) * kw + v] = (hi >= 0 && hi < h && wj >= 0 && wj < wd) ? x[((n * c_in + c) * h + hi) * wd + wj] : 0.0f;
            }
          }
      }
      int64_t q = 0;
      for (; q + 4 <= p1 - p0; q += 4) {
        const float *r0 = cols + q * k_len, *r1 = r0 + k_len, *r2 = r1 + k_len, *r3 = r2 + k_len;
        for (int64_t o = 0; o < n_out; ++o) {
          const float* f = w + o * k_len;
          float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
          for (int64_t t = 0; t < k_len; ++t) {
            const float wt = f[t];
            a0 += __builtin_fabsf(r0[t] - wt);
            a1 += __builtin_fabsf(r1[t] - wt);
            a2 += __builtin_fabsf(r2[t] - wt);
            a3 += __builtin_fabsf(r3[t] - wt);
          }
          float* out = y + (n * n_out + o) * pixels + p0 + q;
          out[0] = -a0; out[1] = -a1; out[2] = -a2; out[3] = -a3;
        }
      }
      for (; q < p1 - p0; ++q) {
        const float* r = cols + q * k_len;
        for (int64_t o = 0; o < n_out; ++o) {
          const float* f = w + o * k_len;
          float acc = 0;
          for (int64_t t = 0; t < k_len; ++t) acc += __builtin_fabsf(r[t] - f[t]);
          y[(n * n_out + o) * pixels + p0 + q] = -acc;
        }
      }
    }
  }
}

static OrtStatus* compute(void* kernel, OrtKernelContext* context) {
  const AdderKernel* k = (const AdderKernel*)kernel;
  size_t inputs = 0;
  TRY(CALL(API_KernelContext_GetInputCount, GetCountFn, context, &inputs));
  if (inputs != 2) return fail(k->name, "takes 2 inputs (X, W), got %lld", (int64_t)inputs, 0, 0, 0);
  const OrtValue *xv = NULL, *wv = NULL;
  TRY(CALL(API_KernelContext_GetInput, GetInputFn, context, 0, &xv));
  TRY(CALL(API_KernelContext_GetInput, GetInputFn, context, 1, &wv));
  if (!xv || !wv) return fail(k->name, "input X or W is missing", 0, 0, 0, 0);
  int64_t xs[4], ws[4];
  size_t x_rank = 0, w_rank = 0;
  TRY(shape_of(xv, xs, &x_rank));
  TRY(shape_of(wv, ws, &w_rank));
  if (x_rank != 4) return fail(k->name, "input X must be 4-D (N, C, H, W), it has rank %lld", (int64_t)x_rank, 0, 0, 0);
  if (w_rank != 4) return fail(k->name, "weight W must be 4-D (O, C, kh, kw), it has rank %lld", (int64_t)w_rank, 0, 0, 0);
  if (xs[0] < 0 || xs[1] < 1 || xs[2] < 1 || xs[3] < 1)
    return fail(k->name, "input X of shape (%lld, %lld, %lld, %lld) is empty", xs[0], xs[1], xs[2], xs[3]);
  if (ws[0] < 1 || ws[1] < 1 || ws[2] < 1 || ws[3] < 1)
    return fail(k->name, "weight W of shape (%lld, %lld, %lld, %lld) is empty", ws[0], ws[1], ws[2], ws[3]);
  if (ws[1] != xs[1]) return fail(k->name, "weight W has %lld input channels but input X has %lld", ws[1], xs[1], 0, 0);
  const int64_t ho = output_size(xs[2], k->ph, ws[2], k->sh), wo = output_size(xs[3], k->pw, ws[3], k->sw);
  if (ho < 1 || wo < 1)
    return fail(k->name, "the %lldx%lld kernel does not fit the padded input (attribute 'pads' %lld, %lld): the output would be empty or too large",
                ws[2], ws[3], k->ph, k->pw);
  const int64_t k_len = checked_mul(checked_mul(ws[1], ws[2]), ws[3]);
  const int64_t y_count = checked_mul(checked_mul(checked_mul(xs[0], ws[0]), ho), wo);
#ifdef _OPENMP
  const int64_t threads = omp_get_max_threads();
#else
  const int64_t threads = 1;
#endif
  const int64_t scratch_count = checked_mul(checked_mul(threads, PIXELS_PER_BLOCK), k_len);
  if (k_len < 0 || y_count < 0 || scratch_count < 0 || checked_mul(y_count, sizeof(float)) < 0 ||
      checked_mul(scratch_count, sizeof(float)) < 0 || (uint64_t)scratch_count * sizeof(float) > SIZE_MAX)
    return fail(k->name, "the output (%lld x %lld x %lld x %lld) or the receptive field is too large to index", xs[0], ws[0], ho, wo);
  const int64_t ys[4] = {xs[0], ws[0], ho, wo};
  OrtValue* yv = NULL;
  TRY(CALL(API_KernelContext_GetOutput, GetOutputFn, context, 0, ys, 4, &yv));
  if (y_count == 0) return NULL; /* an empty batch */
  void *x = NULL, *w = NULL, *y = NULL;
  TRY(CALL(API_GetTensorMutableData, GetDataFn, (OrtValue*)xv, &x));
  TRY(CALL(API_GetTensorMutableData, GetDataFn, (OrtValue*)wv, &w));
  TRY(CALL(API_GetTensorMutableData, GetDataFn, yv, &y));
  float* scratch = (float*)malloc((size_t)scratch_count * sizeof(float));
  if (!x || !w || !y || !scratch) {
    free(scratch);
    return CALL(API_CreateStatus, CreateStatusFn, ORT_FAIL, "kdforge::AdderConv2d: out of memory");
  }
  adder_forward((const float*)x, (const float*)w, (float*)y, scratch, xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], k, ho, wo);
  free(scratch);
  return NULL;
}

static void destroy(void* kernel) { free(kernel); }
static const char* op_name(const OrtCustomOp* op) { (void)op; return "AdderConv2d"; }
static const char* op_provider(const OrtCustomOp* op) { (void)op; return "CPUExecutionProvider"; }
static int float_type(const OrtCustomOp* op, size_t index) { (void)op; (void)index; return ONNX_FLOAT; }
static size_t two(const OrtCustomOp* op) { (void)op; return 2; }
static size_t one(const OrtCustomOp* op) { (void)op; return 1; }

static int zero_at(const OrtCustomOp* op, size_t index) { (void)op; (void)index; return 0; } /* required; default memory */
static int one_int(const OrtCustomOp* op) { (void)op; return 1; }
static int latest(const OrtCustomOp* op) { (void)op; return 0x7fffffff; }

static OrtCustomOp adder_op = {API_VERSION_NEEDED, NULL, op_name, op_provider, float_type, two, float_type, one, NULL, destroy,
                               zero_at, zero_at, zero_at, one_int, one_int, one_int, one_int, create_kernel, compute, NULL,
                               one_int, latest, {0}};

typedef OrtStatus* (*CreateDomainFn)(const char*, OrtCustomOpDomain**);
typedef OrtStatus* (*DomainAddFn)(OrtCustomOpDomain*, const OrtCustomOp*);
typedef OrtStatus* (*AddDomainFn)(OrtSessionOptions*, OrtCustomOpDomain*);

OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  api = base->GetApi(API_VERSION_NEEDED);
  if (!api) {
    api = base->GetApi(1);
    return CALL(API_CreateStatus, CreateStatusFn, ORT_FAIL, "kdforge::AdderConv2d needs ONNX Runtime 1.16 or later");
  }
  OrtCustomOpDomain* domain;
  TRY(CALL(API_CreateCustomOpDomain, CreateDomainFn, "kdforge", &domain));
  TRY(CALL(API_CustomOpDomain_Add, DomainAddFn, domain, &adder_op));
  return CALL(API_AddCustomOpDomain, AddDomainFn, options, domain);
}
