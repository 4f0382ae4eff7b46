/* kdforge::AdderConv2d as an ONNX Runtime custom-op library (C, compiled on first use).
 *
 *   Y[n,o,i,j] = - sum_{c,u,v} | Xpad[n, c, i*s+u, j*s+v] - W[o,c,u,v] |
 *
 * ONNX Runtime loads this library through SessionOptions.register_custom_ops_library and calls
 * RegisterCustomOps. The PyPI onnxruntime wheel ships no C headers, so the few ABI pieces used
 * here are declared below: OrtApiBase, OrtCustomOp at struct version 1 (with the fields later
 * versions appended filled with defaults, since ONNX Runtime calls some of them whatever the
 * version), and OrtApi as a table of function pointers at the positions the C
 * API has kept since its version 1 (the table is append-only). Attributes are read as the
 * scalars stride_h, stride_w, pad_h, pad_w that kdforge.export.ort adds beside the node's
 * `strides`/`pads` lists when it loads a file.
 *
 * The kernel is the CPU algorithm of kdforge/nn/adder_cpu.py: blocks of output pixels of one
 * image gather their receptive fields into a small buffer, then the L1 distance of four pixels
 * to each filter, the inner loop over C*kh*kw vectorised by the compiler; OpenMP across blocks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

enum { ORT_FAIL = 1, ONNX_FLOAT = 1 };

/* positions in the OrtApi function table */
enum {
  API_CreateStatus = 0, API_CreateCustomOpDomain = 26, API_CustomOpDomain_Add = 27, API_AddCustomOpDomain = 28,
  API_GetTensorMutableData = 51, API_GetDimensionsCount = 61, API_GetDimensions = 62, API_GetTensorTypeAndShape = 65,
  API_KernelInfoGetAttribute_int64 = 86, API_KernelContext_GetInput = 90, API_KernelContext_GetOutput = 91,
  API_ReleaseStatus = 93, API_ReleaseTensorTypeAndShapeInfo = 99,
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
  /* appended by later versions; ONNX Runtime calls some of these whatever the version says */
  int (*GetInputCharacteristic)(const struct OrtCustomOp* op, size_t index);
  int (*GetOutputCharacteristic)(const struct OrtCustomOp* op, size_t index);
  int (*GetInputMemoryType)(const struct OrtCustomOp* op, size_t index);
  int (*GetVariadicInputMinArity)(const struct OrtCustomOp* op);
  int (*GetVariadicInputHomogeneity)(const struct OrtCustomOp* op);
  int (*GetVariadicOutputMinArity)(const struct OrtCustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const struct OrtCustomOp* op);
  void* CreateKernelV2;
  void* KernelComputeV2;
  void* InferOutputShapeFn;
  int (*GetStartVersion)(const struct OrtCustomOp* op);
  int (*GetEndVersion)(const struct OrtCustomOp* op);
  void* later_fields[16]; /* anything newer: null */
} OrtCustomOp;

static const void* const* api;
#define CALL(index, type, ...) (((type)api[index])(__VA_ARGS__))

typedef OrtStatus* (*GetInt64Fn)(const OrtKernelInfo*, const char*, int64_t*);
typedef OrtStatus* (*GetInputFn)(const OrtKernelContext*, size_t, const OrtValue**);
typedef OrtStatus* (*GetOutputFn)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**);
typedef OrtStatus* (*GetDataFn)(OrtValue*, void**);
typedef OrtStatus* (*GetShapeFn)(const OrtValue*, OrtTensorTypeAndShapeInfo**);
typedef OrtStatus* (*GetCountFn)(const OrtTensorTypeAndShapeInfo*, size_t*);
typedef OrtStatus* (*GetDimsFn)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t);
typedef void (*ReleaseFn)(void*);

typedef struct { int64_t sh, sw, ph, pw; } AdderKernel;

static int64_t attribute(const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t value = fallback;
  OrtStatus* status = CALL(API_KernelInfoGetAttribute_int64, GetInt64Fn, info, name, &value);
  if (status) {
    CALL(API_ReleaseStatus, ReleaseFn, status);
    return fallback;
  }
  return value;
}

static void shape_of(const OrtValue* value, int64_t dims[4]) {
  OrtTensorTypeAndShapeInfo* info;
  size_t count = 0;
  CALL(API_GetTensorTypeAndShape, GetShapeFn, value, &info);
  CALL(API_GetDimensionsCount, GetCountFn, info, &count);
  memset(dims, 0, 4 * sizeof(int64_t));
  CALL(API_GetDimensions, GetDimsFn, info, dims, count < 4 ? count : 4);
  CALL(API_ReleaseTensorTypeAndShapeInfo, ReleaseFn, info);
}

#define PIXELS_PER_BLOCK 32

static void adder_forward(const float* x, const float* w, float* y, int64_t n_img, int64_t c_in, int64_t h, int64_t wd,
                          int64_t n_out, int64_t kh, int64_t kw, const AdderKernel* k, int64_t ho, int64_t wo) {
  const int64_t pixels = ho * wo, k_len = c_in * kh * kw;
  const int64_t blocks = (pixels + PIXELS_PER_BLOCK - 1) / PIXELS_PER_BLOCK;
#pragma omp parallel
  {
    float* cols = (float*)malloc(sizeof(float) * PIXELS_PER_BLOCK * k_len);
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
    free(cols);
  }
}

static void* create_kernel(const OrtCustomOp* op, const void* api_table, const OrtKernelInfo* info) {
  (void)op; (void)api_table;
  AdderKernel* k = (AdderKernel*)malloc(sizeof(AdderKernel));
  k->sh = attribute(info, "stride_h", 1);
  k->sw = attribute(info, "stride_w", 1);
  k->ph = attribute(info, "pad_h", 0);
  k->pw = attribute(info, "pad_w", 0);
  return k;
}

static void compute(void* kernel, OrtKernelContext* context) {
  const AdderKernel* k = (const AdderKernel*)kernel;
  const OrtValue *xv, *wv;
  CALL(API_KernelContext_GetInput, GetInputFn, context, 0, &xv);
  CALL(API_KernelContext_GetInput, GetInputFn, context, 1, &wv);
  int64_t xs[4], ws[4];
  shape_of(xv, xs);
  shape_of(wv, ws);
  const int64_t ho = (xs[2] + 2 * k->ph - ws[2]) / k->sh + 1, wo = (xs[3] + 2 * k->pw - ws[3]) / k->sw + 1;
  const int64_t ys[4] = {xs[0], ws[0], ho, wo};
  OrtValue* yv;
  CALL(API_KernelContext_GetOutput, GetOutputFn, context, 0, ys, 4, &yv);
  void *x, *w, *y;
  CALL(API_GetTensorMutableData, GetDataFn, (OrtValue*)xv, &x);
  CALL(API_GetTensorMutableData, GetDataFn, (OrtValue*)wv, &w);
  CALL(API_GetTensorMutableData, GetDataFn, yv, &y);
  adder_forward((const float*)x, (const float*)w, (float*)y, xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], k, ho, wo);
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

static OrtCustomOp adder_op = {1, create_kernel, op_name, op_provider, float_type, two, float_type, one, compute, destroy,
                               zero_at, zero_at, zero_at, one_int, one_int, one_int, one_int, NULL, NULL, NULL,
                               one_int, latest, {0}};

typedef OrtStatus* (*CreateDomainFn)(const char*, OrtCustomOpDomain**);
typedef OrtStatus* (*DomainAddFn)(OrtCustomOpDomain*, const OrtCustomOp*);
typedef OrtStatus* (*AddDomainFn)(OrtSessionOptions*, OrtCustomOpDomain*);

OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  api = base->GetApi(1);
  OrtCustomOpDomain* domain;
  OrtStatus* status = CALL(API_CreateCustomOpDomain, CreateDomainFn, "kdforge", &domain);
  if (status) return status;
  status = CALL(API_CustomOpDomain_Add, DomainAddFn, domain, &adder_op);
  if (status) return status;
  return CALL(API_AddCustomOpDomain, AddDomainFn, options, domain);
}
