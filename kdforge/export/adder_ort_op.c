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
 * The float kernel packs one image at a time into a padded channels-last buffer and the weights so
 * that one vector holds one weight of LANES filters; a register tile of 8 pixels x LANES filters
 * then takes, per weight position, the pixel's value broadcast, a subtraction, an absolute value
 * (a mask) and an accumulation: the filters are the lanes, no horizontal sums (the same layout
 * as the integer kernel below). OpenMP shares each image's rows and tiles among the threads.
 * A kernel object is read-only after creation but for the integer kernels' packed-weight cache,
 * which is published once with an atomic compare-and-swap, so one session may run on many threads at once.
 *
 * kdforge::AdderConv2dInteger, the INT8 adder layer (contract in kdforge/export/adder_onnx.py):
 *
 *   Y[n,o,i,j] = - sum_{c,u,v} | Xpad[n, c, i*s+u, j*s+v] - W[o,c,u,v] |    X, W uint8, Y int32
 *
 * where the padding is X's zero point (the third input), as in ONNX's ConvInteger. This is a sum
 * of absolute differences of bytes, one SAD instruction per 8 byte pairs on x86 (psadbw). The
 * kernel copies each image once into a padded channels-last layout whose channels are a multiple
 * of 8, packs the weights so that one vector holds 8 bytes of each of FILTERS filters, and
 * takes SAD(packed filters, 8 bytes of one pixel broadcast): each lane accumulates one filter's
 * sum (int64 lanes, int32 results: |x - w| <= 255 and the checks bound the receptive field), so no
 * horizontal sums are needed. A register tile of 4 pixels x 2 filter vectors reuses each load.
 * The SAD vectors are AVX-512BW, AVX2 or SSE2 intrinsics, whichever the compiler targets; other
 * CPUs get a plain loop over the 8 bytes, which compilers turn into their own SAD instructions.
 *
 * kdforge::QLinearAdderConv2d, the fused INT8 layer (contract in kdforge/export/adder_onnx.py): the
 * same sums S, requantized as they leave the register tile, never stored as int32:
 *
 *   Y = saturate(round_half_even(v) + y_zero_point),  v = multiplier[o] * S + bias[o]  (max(v, 0) with relu)
 *
 * in float32, the product rounded before the sum, rounded half to even in integers: the library is built with -ffp-contract=off,
 * so no fused multiply-add changes the result against PyTorch's reference. multiplier and bias
 * must hold O finite values.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE2__)
#include <immintrin.h>
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

enum { ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2, ONNX_FLOAT = 1, ONNX_UINT8 = 2, ONNX_INT32 = 6 };
enum { API_VERSION_NEEDED = 16 }; /* KernelInfo_GetNodeName (15), CreateKernelV2/KernelComputeV2 (16) */

/* positions in the OrtApi function table */
enum {
  API_CreateStatus = 0, API_CreateCustomOpDomain = 26, API_CustomOpDomain_Add = 27, API_AddCustomOpDomain = 28,
  API_GetTensorMutableData = 51, API_GetDimensionsCount = 61, API_GetDimensions = 62, API_GetTensorTypeAndShape = 65,
  API_KernelContext_GetInputCount = 88, API_KernelContext_GetInput = 90, API_KernelContext_GetOutput = 91,
  API_KernelInfoGetAttribute_int64 = 86, API_ReleaseStatus = 93, API_ReleaseTensorTypeAndShapeInfo = 99,
  API_KernelInfoGetAttributeArray_int64 = 163,
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
typedef OrtStatus* (*GetIntFn)(const OrtKernelInfo*, const char*, int64_t*);
typedef OrtStatus* (*GetNameFn)(const OrtKernelInfo*, char*, size_t*);
typedef OrtStatus* (*GetCountFn)(const OrtKernelContext*, size_t*);
typedef OrtStatus* (*GetInputFn)(const OrtKernelContext*, size_t, const OrtValue**);
typedef OrtStatus* (*GetOutputFn)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**);
typedef OrtStatus* (*GetDataFn)(OrtValue*, void**);
typedef OrtStatus* (*GetShapeFn)(const OrtValue*, OrtTensorTypeAndShapeInfo**);
typedef OrtStatus* (*GetDimsCountFn)(const OrtTensorTypeAndShapeInfo*, size_t*);
typedef OrtStatus* (*GetDimsFn)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t);
typedef void (*ReleaseFn)(void*);

/* The integer kernels' packed weights, kept with the raw weights they were packed from: W is
 * usually a constant initializer, packed on the first run only; a W that changes (a graph input)
 * is compared, found different and packed again for that run. */
typedef struct {
  int64_t o, c, kh, kw;
  uint8_t *raw, *packed;
} WeightCache;

typedef struct {
  int64_t sh, sw, ph, pw, relu;
  const char* op; /* "AdderConv2d", "AdderConv2dInteger" or "QLinearAdderConv2d" */
  char name[128];
  WeightCache* cache; /* set once, atomically; NULL until the first integer run */
} AdderKernel;

#define TRY(expr)                  \
  do {                             \
    OrtStatus* status_ = (expr);   \
    if (status_) return status_;   \
  } while (0)

static OrtStatus* fail(const AdderKernel* k, const char* format, int64_t a, int64_t b, int64_t c, int64_t d) {
  char message[640], detail[384];
  snprintf(detail, sizeof detail, format, (long long)a, (long long)b, (long long)c, (long long)d);
  snprintf(message, sizeof message, "kdforge::%s node '%s': %s", k->op, k->name, detail);
  return CALL(API_CreateStatus, CreateStatusFn, ORT_INVALID_ARGUMENT, message);
}

static OrtStatus* out_of_memory(const AdderKernel* k) {
  return fail(k, "out of memory", 0, 0, 0, 0);
}

/* An int64 list attribute of exactly `count` values; `fallback` where the node has none (ONNX's defaults). */
static OrtStatus* int_list(const OrtKernelInfo* info, const AdderKernel* k, const char* name, int64_t* out, size_t count,
                           const int64_t* fallback) {
  size_t size = 0;
  OrtStatus* status = CALL(API_KernelInfoGetAttributeArray_int64, GetArrayFn, info, name, NULL, &size);
  if (status) { /* absent */
    CALL(API_ReleaseStatus, ReleaseFn, status);
    memcpy(out, fallback, count * sizeof(int64_t));
    return NULL;
  }
  if (size != count)
    return fail(k, name[0] == 's' ? "attribute 'strides' must hold %lld integers, it holds %lld"
                                  : "attribute 'pads' must hold %lld integers, it holds %lld", (int64_t)count, (int64_t)size, 0, 0);
  return CALL(API_KernelInfoGetAttributeArray_int64, GetArrayFn, info, name, out, &size);
}

static OrtStatus* create_kernel(const char* op, const OrtKernelInfo* info, void** out) {
  AdderKernel k;
  memset(&k, 0, sizeof k);
  k.op = op;
  size_t name_size = sizeof k.name;
  OrtStatus* status = CALL(API_KernelInfo_GetNodeName, GetNameFn, info, k.name, &name_size);
  if (status) { /* a name longer than the buffer: keep its start */
    CALL(API_ReleaseStatus, ReleaseFn, status);
    k.name[0] = '\0';
  }
  k.name[sizeof k.name - 1] = '\0';
  static const int64_t unit_strides[2] = {1, 1}, no_pads[4] = {0, 0, 0, 0};
  int64_t strides[2], pads[4];
  TRY(int_list(info, &k, "strides", strides, 2, unit_strides));
  TRY(int_list(info, &k, "pads", pads, 4, no_pads));
  if (strides[0] < 1 || strides[1] < 1)
    return fail(&k, "attribute 'strides' must be 2 integers >= 1, got [%lld, %lld]", strides[0], strides[1], 0, 0);
  if (pads[0] < 0 || pads[1] < 0 || pads[2] < 0 || pads[3] < 0)
    return fail(&k, "attribute 'pads' must be 4 integers >= 0, got [%lld, %lld, %lld, %lld]", pads[0], pads[1], pads[2], pads[3]);
  if (pads[0] != pads[2] || pads[1] != pads[3])
    return fail(&k, "attribute 'pads' must be symmetric (top = bottom, left = right), got [%lld, %lld, %lld, %lld]",
                pads[0], pads[1], pads[2], pads[3]);
  k.sh = strides[0]; k.sw = strides[1]; k.ph = pads[0]; k.pw = pads[1];
  if (strcmp(op, "QLinearAdderConv2d") == 0) {
    OrtStatus* absent = CALL(API_KernelInfoGetAttribute_int64, GetIntFn, info, "relu", &k.relu);
    if (absent) { /* ONNX's default for an absent attribute */
      CALL(API_ReleaseStatus, ReleaseFn, absent);
      k.relu = 0;
    }
    if (k.relu != 0 && k.relu != 1) return fail(&k, "attribute 'relu' must be 0 or 1, got %lld", k.relu, 0, 0, 0);
  }
  AdderKernel* kernel = (AdderKernel*)malloc(sizeof(AdderKernel));
  if (!kernel) return out_of_memory(&k);
  *kernel = k;
  *out = kernel;
  return NULL;
}

static OrtStatus* create_float(const OrtCustomOp* op, const void* api_table, const OrtKernelInfo* info, void** out) {
  (void)op; (void)api_table;
  return create_kernel("AdderConv2d", info, out);
}

static OrtStatus* create_integer(const OrtCustomOp* op, const void* api_table, const OrtKernelInfo* info, void** out) {
  (void)op; (void)api_table;
  return create_kernel("AdderConv2dInteger", info, out);
}

static OrtStatus* create_qlinear(const OrtCustomOp* op, const void* api_table, const OrtKernelInfo* info, void** out) {
  (void)op; (void)api_table;
  return create_kernel("QLinearAdderConv2d", info, out);
}

static OrtStatus* shape_of(const OrtValue* value, int64_t dims[4], size_t* rank) {
  OrtTensorTypeAndShapeInfo* info;
  TRY(CALL(API_GetTensorTypeAndShape, GetShapeFn, value, &info));
  OrtStatus* status = CALL(API_GetDimensionsCount, GetDimsCountFn, info, rank);
  if (!status && *rank <= 4) status = CALL(API_GetDimensions, GetDimsFn, info, dims, *rank);
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

/* The output size of one axis, or -1 where the kernel does not fit the padded input or a sum overflows. */
static int64_t output_size(int64_t size, int64_t pad, int64_t kernel, int64_t stride) {
  const int64_t padded = checked_add(size, checked_mul(2, pad));
  return (padded < 0 || padded < kernel) ? -1 : (padded - kernel) / stride + 1;
}

static int64_t thread_count(void) {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

static int64_t thread_index(void) {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/* One run's tensors, checked. */
typedef struct {
  int64_t n, c, h, w, o, kh, kw, ho, wo, k_len, y_count;
  void *x, *weight, *y;
} Run;

/* Checks X (input 0) and W (input 1) against each other and the node's attributes, allocates Y
 * of `y_type`'s element size, and fills `r`; `inputs` is how many inputs the op takes. */
static OrtStatus* prepare(const AdderKernel* k, OrtKernelContext* context, size_t inputs, size_t y_element_size, Run* r) {
  size_t count = 0;
  TRY(CALL(API_KernelContext_GetInputCount, GetCountFn, context, &count));
  if (count != inputs) return fail(k, "takes %lld inputs, got %lld", (int64_t)inputs, (int64_t)count, 0, 0);
  const OrtValue *xv = NULL, *wv = NULL;
  TRY(CALL(API_KernelContext_GetInput, GetInputFn, context, 0, &xv));
  TRY(CALL(API_KernelContext_GetInput, GetInputFn, context, 1, &wv));
  if (!xv || !wv) return fail(k, "input X or W is missing", 0, 0, 0, 0);
  int64_t xs[4], ws[4];
  size_t x_rank = 0, w_rank = 0;
  TRY(shape_of(xv, xs, &x_rank));
  TRY(shape_of(wv, ws, &w_rank));
  if (x_rank != 4) return fail(k, "input X must be 4-D (N, C, H, W), it has rank %lld", (int64_t)x_rank, 0, 0, 0);
  if (w_rank != 4) return fail(k, "weight W must be 4-D (O, C, kh, kw), it has rank %lld", (int64_t)w_rank, 0, 0, 0);
  if (xs[0] < 0 || xs[1] < 1 || xs[2] < 1 || xs[3] < 1)
    return fail(k, "input X of shape (%lld, %lld, %lld, %lld) is empty", xs[0], xs[1], xs[2], xs[3]);
  if (ws[0] < 1 || ws[1] < 1 || ws[2] < 1 || ws[3] < 1)
    return fail(k, "weight W of shape (%lld, %lld, %lld, %lld) is empty", ws[0], ws[1], ws[2], ws[3]);
  if (ws[1] != xs[1]) return fail(k, "weight W has %lld input channels but input X has %lld", ws[1], xs[1], 0, 0);
  const int64_t ho = output_size(xs[2], k->ph, ws[2], k->sh), wo = output_size(xs[3], k->pw, ws[3], k->sw);
  if (ho < 1 || wo < 1)
    return fail(k, "the %lldx%lld kernel does not fit the padded input (attribute 'pads' %lld, %lld): the output would be empty or too large",
                ws[2], ws[3], k->ph, k->pw);
  const int64_t k_len = checked_mul(checked_mul(ws[1], ws[2]), ws[3]);
  const int64_t y_count = checked_mul(checked_mul(checked_mul(xs[0], ws[0]), ho), wo);
  if (k_len < 0 || y_count < 0 || checked_mul(y_count, (int64_t)y_element_size) < 0)
    return fail(k, "the output (%lld x %lld x %lld x %lld) or the receptive field is too large to index", xs[0], ws[0], ho, wo);
  const int64_t ys[4] = {xs[0], ws[0], ho, wo};
  OrtValue* yv = NULL;
  TRY(CALL(API_KernelContext_GetOutput, GetOutputFn, context, 0, ys, 4, &yv));
  *r = (Run){xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], ho, wo, k_len, y_count, NULL, NULL, NULL};
  if (y_count == 0) return NULL; /* an empty batch */
  TRY(CALL(API_GetTensorMutableData, GetDataFn, (OrtValue*)xv, &r->x));
  TRY(CALL(API_GetTensorMutableData, GetDataFn, (OrtValue*)wv, &r->weight));
  TRY(CALL(API_GetTensorMutableData, GetDataFn, yv, &r->y));
  if (!r->x || !r->weight || !r->y) return out_of_memory(k);
  return NULL;
}

/* ---- float: kdforge::AdderConv2d ---- */

#define PIXELS_PER_BLOCK 32
#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float vfloat __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(LANES * sizeof(float))));
/* acc + d as an FMA with multiplier 1 (exact: one rounding, as the addition), where there are FMA
 * units: AMD's Zen cores run additions and FMAs on different pipes, so the subtraction and the
 * accumulation of each term no longer queue for the same two */
#if defined(__AVX512F__)
#define ACCUMULATE(acc, d) ((vfloat)_mm512_fmadd_ps((__m512)(d), _mm512_set1_ps(1.0f), (__m512)(acc)))
#elif defined(__FMA__) && LANES == 8
#define ACCUMULATE(acc, d) ((vfloat)_mm256_fmadd_ps((__m256)(d), _mm256_set1_ps(1.0f), (__m256)(acc)))
#else
#define ACCUMULATE(acc, d) ((acc) + (d))
#endif
#define FLOAT_TILE 8 /* pixels per register tile, against one vector of LANES filters */

/* W[o, c, u, v] -> wp[block of LANES filters][t = (u, v, c)][filter in block], filters beyond O 0
 * (their sums are computed and dropped): one vector load gives LANES filters' weight at t. */
static void pack_float_weights(const float* w, float* wp, const Run* r) {
  const int64_t blocks = (r->o + LANES - 1) / LANES, field = r->kh * r->kw;
#pragma omp for schedule(static)
  for (int64_t block = 0; block < blocks; ++block)
    for (int64_t t = 0; t < r->k_len; ++t) {
      const int64_t uv = t / r->c, c = t % r->c;
      for (int64_t f = 0; f < LANES; ++f) {
        const int64_t o = block * LANES + f;
        wp[(block * r->k_len + t) * LANES + f] = o < r->o ? w[(o * r->c + c) * field + uv] : 0.0f;
      }
    }
}

/* Image n of X -> xp[h + 2 ph][w + 2 pw][c], the border 0. Called inside a parallel region. */
static void pack_float_image(const float* x, int64_t n, float* xp, const Run* r, const AdderKernel* k, int64_t hp, int64_t wp) {
#pragma omp for schedule(static)
  for (int64_t row = 0; row < hp; ++row) {
    const int64_t hi = row - k->ph;
    float* dst = xp + row * wp * r->c;
    if (hi < 0 || hi >= r->h) {
      memset(dst, 0, (size_t)(wp * r->c) * sizeof(float));
      continue;
    }
    memset(dst, 0, (size_t)(k->pw * r->c) * sizeof(float));
    memset(dst + (k->pw + r->w) * r->c, 0, (size_t)((wp - k->pw - r->w) * r->c) * sizeof(float));
    for (int64_t c = 0; c < r->c; ++c) {
      const float* src = x + ((n * r->c + c) * r->h + hi) * r->w;
      float* out = dst + k->pw * r->c + c;
      for (int64_t j = 0; j < r->w; ++j) out[j * r->c] = src[j];
    }
  }
}

/* One image at a time: packed channels-last (its padded rows shared among the threads), then
 * tiles of FLOAT_TILE pixels x LANES filters shared likewise: per t = (u, v, c), one weight
 * vector, each pixel's value broadcast, and a subtraction, an absolute value (a mask) and an
 * addition per pixel; the filters are the vector lanes, so no horizontal sums. Called inside a
 * parallel region. */
static void adder_forward(const float* x, const float* wp, float* y, float* xp, const Run* r, const AdderKernel* k) {
  const int64_t pixels = r->ho * r->wo, k_len = r->k_len, c_in = r->c;
  const int64_t hp = r->h + 2 * k->ph, wpad = r->w + 2 * k->pw;
  const int64_t filter_blocks = (r->o + LANES - 1) / LANES, tiles = (pixels + FLOAT_TILE - 1) / FLOAT_TILE;
  const vint magnitude = (vint){} + 0x7fffffff;
  for (int64_t n = 0; n < r->n; ++n) {
    pack_float_image(x, n, xp, r, k, hp, wpad); /* ends in a barrier */
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tiles * filter_blocks; ++task) {
      const int64_t block = task % filter_blocks, q0 = (task / filter_blocks) * FLOAT_TILE;
      const int64_t count = pixels - q0 < FLOAT_TILE ? pixels - q0 : FLOAT_TILE;
      const float* f = wp + block * k_len * LANES;
      const float* field[FLOAT_TILE]; /* a short tile repeats its first pixel */
      for (int q = 0; q < FLOAT_TILE; ++q) {
        const int64_t pixel = q0 + (q < count ? q : 0), i = pixel / r->wo, j = pixel % r->wo;
        field[q] = xp + (i * k->sh * wpad + j * k->sw) * c_in;
      }
      vfloat a[FLOAT_TILE];
      for (int q = 0; q < FLOAT_TILE; ++q) a[q] = (vfloat){};
      int64_t t = 0;
      for (int64_t u = 0; u < r->kh; ++u)
        for (int64_t v = 0; v < r->kw; ++v) {
          const int64_t offset = (u * wpad + v) * c_in;
          for (int64_t c = 0; c < c_in; ++c, ++t) {
            vfloat w0;
            memcpy(&w0, f + t * LANES, sizeof w0);
            for (int q = 0; q < FLOAT_TILE; ++q) {
              const vfloat xq = (vfloat){} + field[q][offset + c];
              a[q] = ACCUMULATE(a[q], (vfloat)((vint)(xq - w0) & magnitude));
            }
          }
        }
      float tile[FLOAT_TILE][LANES];
      for (int q = 0; q < FLOAT_TILE; ++q) memcpy(tile[q], &a[q], sizeof a[q]);
      const int64_t o0 = block * LANES, o1 = o0 + LANES < r->o ? o0 + LANES : r->o;
      for (int64_t o = o0; o < o1; ++o)
        for (int64_t q = 0; q < count; ++q) y[(n * r->o + o) * pixels + q0 + q] = -tile[q][o - o0];
    }
  }
}

static OrtStatus* compute_float(void* kernel, OrtKernelContext* context) {
  const AdderKernel* k = (const AdderKernel*)kernel;
  Run r;
  TRY(prepare(k, context, 2, sizeof(float), &r));
  if (r.y_count == 0) return NULL;
  const int64_t image_count = checked_mul(checked_mul(checked_add(r.h, checked_mul(2, k->ph)), checked_add(r.w, checked_mul(2, k->pw))), r.c);
  const int64_t packed_count = checked_mul(checked_mul((r.o + LANES - 1) / LANES, LANES), r.k_len);
  if (image_count < 0 || packed_count < 0 || checked_mul(image_count, sizeof(float)) < 0 || checked_mul(packed_count, sizeof(float)) < 0 ||
      (uint64_t)image_count * sizeof(float) > SIZE_MAX || (uint64_t)packed_count * sizeof(float) > SIZE_MAX)
    return fail(k, "the input (%lld x %lld x %lld) or the weight is too large to index", r.c, r.h, r.w, 0);
  float* image = (float*)malloc((size_t)image_count * sizeof(float));
  float* packed = (float*)malloc((size_t)packed_count * sizeof(float));
  if (!image || !packed) {
    free(image);
    free(packed);
    return out_of_memory(k);
  }
#pragma omp parallel /* every loop inside is shared among the region's threads and ends in a barrier */
  {
    pack_float_weights((const float*)r.weight, packed, &r);
    adder_forward((const float*)r.x, packed, (float*)r.y, image, &r, k);
  }
  free(image);
  free(packed);
  return NULL;
}

/* ---- integer: kdforge::AdderConv2dInteger ---- */

#if defined(KDFORGE_PORTABLE_SAD) /* the plain loop below, e.g. to test it on x86 */
#define SAD_PORTABLE
#elif defined(__AVX512BW__)
typedef __m512i sad_vec;
#define FILTERS 8
#define SAD(a, b) _mm512_sad_epu8(a, b)
#define ADD(a, b) _mm512_add_epi64(a, b)
#define ZERO() _mm512_setzero_si512()
#define BROADCAST(p) _mm512_set1_epi64(load8(p))
#define LOAD(p) _mm512_loadu_si512((const void*)(p))
#define STORE(p, v) _mm512_storeu_si512((void*)(p), v)
#elif defined(__AVX2__)
typedef __m256i sad_vec;
#define FILTERS 4
#define SAD(a, b) _mm256_sad_epu8(a, b)
#define ADD(a, b) _mm256_add_epi64(a, b)
#define ZERO() _mm256_setzero_si256()
#define BROADCAST(p) _mm256_set1_epi64x(load8(p))
#define LOAD(p) _mm256_loadu_si256((const __m256i*)(p))
#define STORE(p, v) _mm256_storeu_si256((__m256i*)(p), v)
#elif defined(__SSE2__)
typedef __m128i sad_vec;
#define FILTERS 2
#define SAD(a, b) _mm_sad_epu8(a, b)
#define ADD(a, b) _mm_add_epi64(a, b)
#define ZERO() _mm_setzero_si128()
#define BROADCAST(p) _mm_set1_epi64x(load8(p))
#define LOAD(p) _mm_loadu_si128((const __m128i*)(p))
#define STORE(p, v) _mm_storeu_si128((__m128i*)(p), v)
#else
#define SAD_PORTABLE
#endif
#ifdef SAD_PORTABLE
typedef uint64_t sad_vec; /* one filter's 8 bytes; the compiler vectorises sad8 as it can */
#define FILTERS 1
static uint64_t sad8(uint64_t a, uint64_t b) {
  uint64_t sum = 0;
  for (int i = 0; i < 64; i += 8) {
    const int d = (int)((a >> i) & 0xff) - (int)((b >> i) & 0xff);
    sum += (uint64_t)(d < 0 ? -d : d);
  }
  return sum;
}
#define SAD(a, b) sad8(a, b)
#define ADD(a, b) ((a) + (b))
#define ZERO() ((uint64_t)0)
#define BROADCAST(p) ((uint64_t)load8(p))
#define LOAD(p) ((uint64_t)load8(p))
#define STORE(p, v) (*(p) = (v))
#endif
#define TILE_PIXELS 4
#define FILTER_BLOCK (2 * FILTERS) /* two vectors of filters per register tile */

static int64_t load8(const uint8_t* p) {
  int64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* Sizes of the integer kernel's buffers: the padded channels-last images and the packed weights. */
typedef struct {
  int64_t c8, hp, wp, chunks, blocks, image_bytes, weight_bytes;
} Packing;

static int64_t packing_of(const Run* r, const AdderKernel* k, Packing* p) {
  p->c8 = checked_mul((r->c + 7) / 8, 8);
  p->hp = checked_add(r->h, checked_mul(2, k->ph));
  p->wp = checked_add(r->w, checked_mul(2, k->pw));
  p->chunks = checked_mul(checked_mul(r->kh, r->kw), p->c8 / 8);
  p->blocks = checked_mul((r->o + FILTER_BLOCK - 1) / FILTER_BLOCK, 2);
  p->image_bytes = checked_mul(checked_mul(checked_mul(r->n, p->hp), p->wp), p->c8);
  p->weight_bytes = checked_mul(checked_mul(checked_mul(p->blocks, p->chunks), FILTERS), 8);
  return (p->c8 < 0 || p->chunks < 0 || p->blocks < 0 || p->image_bytes < 0 || p->weight_bytes < 0 ||
          (uint64_t)p->image_bytes > SIZE_MAX || (uint64_t)p->weight_bytes > SIZE_MAX) ? -1 : 0;
}

/* W[o, c, u, v] -> wp[block of FILTERS][(u, v, c / 8) chunk][filter in block][c % 8], written in
 * order; the padding (filters beyond O, channels beyond C) is 0 on both sides, so |0 - 0| adds nothing. */
static void pack_weights(const uint8_t* w, uint8_t* wp, const Run* r, const Packing* p) {
  const int64_t channel_chunks = p->c8 / 8, field = r->kh * r->kw;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < p->blocks; ++block) {
    uint8_t* out = wp + block * p->chunks * FILTERS * 8;
    for (int64_t chunk = 0; chunk < p->chunks; ++chunk) {
      const int64_t uv = chunk / channel_chunks, c0 = (chunk % channel_chunks) * 8;
      for (int64_t f = 0; f < FILTERS; ++f, out += 8) {
        const int64_t o = block * FILTERS + f;
        for (int64_t b = 0; b < 8; ++b)
          out[b] = (o < r->o && c0 + b < r->c) ? w[(o * r->c + c0 + b) * field + uv] : 0;
      }
    }
  }
}

#if defined(__SSE2__)
/* Channels c0..c0+7 of 16 consecutive pixels (`rows[i]` is channel c0+i's row, from pixel j) into
 * the 8 bytes of each pixel at dst + pixel * stride: an 8 x 16 byte transpose in three rounds of
 * interleaving (8-, 16-, then 32-bit). */
static void transpose_8x16(const uint8_t* const rows[8], int64_t j, uint8_t* dst, int64_t stride) {
  __m128i a[8], b[8], c[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm_loadu_si128((const __m128i*)(rows[i] + j));
  for (int i = 0; i < 4; ++i) {
    b[i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]); /* pixels 0-7, channel pair i */
    b[i + 4] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]); /* pixels 8-15 */
  }
  for (int half = 0; half < 2; ++half)
    for (int pair = 0; pair < 2; ++pair) {
      const __m128i lo = b[4 * half + 2 * pair], hi = b[4 * half + 2 * pair + 1];
      c[4 * half + 2 * pair] = _mm_unpacklo_epi16(lo, hi); /* 4 pixels, 4 channels each */
      c[4 * half + 2 * pair + 1] = _mm_unpackhi_epi16(lo, hi);
    }
  for (int half = 0; half < 2; ++half)
    for (int quarter = 0; quarter < 2; ++quarter) {
      const __m128i first = c[4 * half + quarter], second = c[4 * half + 2 + quarter]; /* channels 0-3 and 4-7 */
      const __m128i lo = _mm_unpacklo_epi32(first, second), hi = _mm_unpackhi_epi32(first, second);
      uint8_t* out = dst + (8 * half + 4 * quarter) * stride;
      _mm_storel_epi64((__m128i*)out, lo);
      _mm_storel_epi64((__m128i*)(out + stride), _mm_srli_si128(lo, 8));
      _mm_storel_epi64((__m128i*)(out + 2 * stride), hi);
      _mm_storel_epi64((__m128i*)(out + 3 * stride), _mm_srli_si128(hi, 8));
    }
}
#endif

/* X[n, c, h, w] -> xp[n][h + 2 ph][w + 2 pw][c8], the border the zero point, the extra channels 0.
 * Called inside a parallel region: its loop is shared among the region's threads. */
static void pack_image(const uint8_t* x, uint8_t zero_point, uint8_t* xp, const Run* r, const AdderKernel* k, const Packing* p) {
#pragma omp for schedule(static)
  for (int64_t row = 0; row < r->n * p->hp; ++row) {
    const int64_t n = row / p->hp, hi = row % p->hp - k->ph;
    uint8_t* dst = xp + row * p->wp * p->c8;
    const int inside = hi >= 0 && hi < r->h;
    for (int64_t col = 0; col < p->wp; ++col) { /* border pixels, padding channels */
      uint8_t* pixel = dst + col * p->c8;
      if (!inside || col < k->pw || col >= k->pw + r->w) memset(pixel, zero_point, (size_t)r->c);
      memset(pixel + r->c, 0, (size_t)(p->c8 - r->c));
    }
    if (!inside) continue;
    uint8_t* first = dst + k->pw * p->c8;
    for (int64_t c0 = 0; c0 < r->c; c0 += 8) {
      const int64_t channels = r->c - c0 < 8 ? r->c - c0 : 8;
      int64_t j = 0;
#if defined(__SSE2__)
      if (channels == 8) {
        const uint8_t* rows[8];
        for (int i = 0; i < 8; ++i) rows[i] = x + ((n * r->c + c0 + i) * r->h + hi) * r->w;
        for (; j + 16 <= r->w; j += 16) transpose_8x16(rows, j, first + j * p->c8 + c0, p->c8);
      }
#endif
      for (int64_t c = c0; c < c0 + channels; ++c) {
        const uint8_t* src = x + ((n * r->c + c) * r->h + hi) * r->w;
        for (int64_t jj = j; jj < r->w; ++jj) first[jj * p->c8 + c] = src[jj];
      }
    }
  }
}

/* The packed weights of this run's W: the cache's where it holds these weights, else packed now
 * into a buffer the caller frees (`*owned`), and cached if the cache is empty. NULL: out of memory. */
static const uint8_t* packed_weights(AdderKernel* k, const Run* r, const Packing* p, uint8_t** owned) {
  const size_t raw_bytes = (size_t)(r->o * r->k_len);
  WeightCache* cache = __atomic_load_n(&k->cache, __ATOMIC_ACQUIRE);
  *owned = NULL;
  if (cache && cache->o == r->o && cache->c == r->c && cache->kh == r->kh && cache->kw == r->kw &&
      memcmp(cache->raw, r->weight, raw_bytes) == 0)
    return cache->packed;
  uint8_t* packed = (uint8_t*)malloc((size_t)p->weight_bytes);
  if (!packed) return NULL;
  pack_weights((const uint8_t*)r->weight, packed, r, p);
  if (!cache) {
    WeightCache* mine = (WeightCache*)malloc(sizeof(WeightCache));
    uint8_t* raw = (uint8_t*)malloc(raw_bytes);
    if (mine && raw) {
      memcpy(raw, r->weight, raw_bytes);
      *mine = (WeightCache){r->o, r->c, r->kh, r->kw, raw, packed};
      WeightCache* expected = NULL;
      if (__atomic_compare_exchange_n(&k->cache, &expected, mine, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return packed; /* the cache owns it now */
    }
    free(mine);
    free(raw);
  }
  *owned = packed;
  return packed;
}

/* The fused layer's requantization of one sum (see the top of the file). */
typedef struct {
  const float *multiplier, *bias;
  int32_t y_zero_point;
  int relu;
} Requant;

/* One filter's requantization of `count` consecutive pixels, in place in `sums`, then narrowed into
 * y; written in selects that GCC vectorises (a form with comparisons used as integers is not). */
static void requantize_row(int32_t* restrict sums, uint8_t* restrict y, int64_t count, const Requant* q, int64_t o) {
  const float m = q->multiplier[o], b = q->bias[o], lo = q->relu ? 0.0f : -512.0f; /* beyond +-512 every zero point saturates alike */
  const int32_t zero_point = q->y_zero_point;
  for (int64_t i = 0; i < count; ++i) {
    float v = (float)sums[i] * m;
    v = v + b;
    v = v < lo ? lo : v;
    v = v > 512.0f ? 512.0f : v;
    int32_t t = (int32_t)v; /* toward zero, then floor, then half to even: integers, no libm, nothing fast-math can fold */
    t = v < (float)t ? t - 1 : t;
    const float fraction = v - (float)t; /* exact: v and t are within 1 of each other */
    const int32_t up = fraction > 0.5f ? 1 : 0, tie = fraction == 0.5f ? (t & 1) : 0;
    t = t + up + tie + zero_point;
    t = t < 0 ? 0 : t;
    sums[i] = t > 255 ? 255 : t;
  }
  for (int64_t i = 0; i < count; ++i) y[i] = (uint8_t)sums[i];
}

/* Y = -sum |Xpad - W|: int32 into y, or with `requant` requantized into the uint8 y through
 * `scratch`, O x PIXELS_PER_BLOCK int32 per thread. Called inside a parallel region. */
static void adder_forward_u8(const uint8_t* xp, const uint8_t* wp, void* y, const Requant* requant, int32_t* scratch, const Run* r,
                             const AdderKernel* k, const Packing* p) {
  const int64_t pixels = r->ho * r->wo, blocks = (pixels + PIXELS_PER_BLOCK - 1) / PIXELS_PER_BLOCK;
  const int64_t channel_chunks = p->c8 / 8, vector_bytes = FILTERS * 8;
#pragma omp for schedule(static)
  for (int64_t task = 0; task < r->n * blocks; ++task) {
    const int64_t n = task / blocks, p0 = (task % blocks) * PIXELS_PER_BLOCK;
    const int64_t p1 = p0 + PIXELS_PER_BLOCK < pixels ? p0 + PIXELS_PER_BLOCK : pixels;
    int32_t* sums = requant ? scratch + thread_index() * r->o * PIXELS_PER_BLOCK : NULL;
    uint64_t tile[TILE_PIXELS][FILTER_BLOCK];
    for (int64_t block = 0; block < p->blocks; block += 2) {
      const uint8_t* f0 = wp + block * p->chunks * vector_bytes;
      const uint8_t* f1 = f0 + p->chunks * vector_bytes;
      for (int64_t q0 = p0; q0 < p1; q0 += TILE_PIXELS) {
        const int64_t count = p1 - q0 < TILE_PIXELS ? p1 - q0 : TILE_PIXELS;
        const uint8_t* field[TILE_PIXELS]; /* each pixel's receptive field starts here; a short tile repeats its first */
        for (int q = 0; q < TILE_PIXELS; ++q) {
          const int64_t pixel = q0 + (q < count ? q : 0), i = pixel / r->wo, j = pixel % r->wo;
          field[q] = xp + ((n * p->hp + i * k->sh) * p->wp + j * k->sw) * p->c8;
        }
        sad_vec a[TILE_PIXELS], b[TILE_PIXELS];
        for (int q = 0; q < TILE_PIXELS; ++q) a[q] = b[q] = ZERO();
        int64_t chunk = 0;
        for (int64_t u = 0; u < r->kh; ++u)
          for (int64_t v = 0; v < r->kw; ++v) {
            const int64_t offset = (u * p->wp + v) * p->c8;
            for (int64_t cc = 0; cc < channel_chunks; ++cc, ++chunk) {
              const sad_vec w0 = LOAD(f0 + chunk * vector_bytes), w1 = LOAD(f1 + chunk * vector_bytes);
              for (int q = 0; q < TILE_PIXELS; ++q) {
                const sad_vec xq = BROADCAST(field[q] + offset + cc * 8);
                a[q] = ADD(a[q], SAD(w0, xq));
                b[q] = ADD(b[q], SAD(w1, xq));
              }
            }
          }
        for (int q = 0; q < TILE_PIXELS; ++q) {
          STORE((sad_vec*)tile[q], a[q]);
          STORE((sad_vec*)(tile[q] + FILTERS), b[q]);
        }
        const int64_t o0 = block * FILTERS, o1 = o0 + FILTER_BLOCK < r->o ? o0 + FILTER_BLOCK : r->o;
        if (sums && count == TILE_PIXELS && o1 - o0 == FILTER_BLOCK) { /* a full tile: constant offsets, unrolled */
          int32_t* base = sums + o0 * PIXELS_PER_BLOCK + q0 - p0;
          for (int f = 0; f < FILTER_BLOCK; ++f)
            for (int t = 0; t < TILE_PIXELS; ++t) base[f * PIXELS_PER_BLOCK + t] = -(int32_t)tile[t][f];
          continue;
        }
        for (int64_t o = o0; o < o1; ++o)
          for (int64_t t = 0; t < count; ++t) {
            if (sums)
              sums[o * PIXELS_PER_BLOCK + q0 - p0 + t] = -(int32_t)tile[t][o - o0];
            else
              ((int32_t*)y)[(n * r->o + o) * pixels + q0 + t] = -(int32_t)tile[t][o - o0];
          }
      }
    }
    if (sums)
      for (int64_t o = 0; o < r->o; ++o)
        requantize_row(sums + o * PIXELS_PER_BLOCK, (uint8_t*)y + (n * r->o + o) * pixels + p0, p1 - p0, requant, o);
  }
}

/* Input `index`'s data, which must hold exactly `count` values (a scalar counts as one; any rank
 * whose dimensions multiply to `count` is taken, as ONNX Runtime's QLinearConv takes its scales). */
static OrtStatus* values_of(const AdderKernel* k, OrtKernelContext* context, size_t index, const char* name, int64_t count, void** data) {
  const OrtValue* v = NULL;
  TRY(CALL(API_KernelContext_GetInput, GetInputFn, context, index, &v));
  if (!v) return fail(k, name[0] == 'x' ? "input x_zero_point is missing" : "an input (multiplier, bias or y_zero_point) is missing", 0, 0, 0, 0);
  int64_t dims[4];
  size_t rank = 0;
  TRY(shape_of(v, dims, &rank));
  if (rank > 4) return fail(k, "an input of rank %lld where %lld values are expected (x_zero_point, multiplier, bias, y_zero_point)", (int64_t)rank, count, 0, 0);
  int64_t total = 1;
  for (size_t i = 0; i < rank; ++i) total = checked_mul(total, dims[i]);
  if (total != count)
    return fail(k, name[0] == 'x' ? "input x_zero_point must be one value (a scalar or shape [1]), it has %lld (rank %lld)"
                                  : "inputs multiplier and bias must hold one value per filter and y_zero_point one: got %lld values where %lld are expected",
                total, name[0] == 'x' ? (int64_t)rank : count, 0, 0);
  *data = NULL;
  if (count > 0) TRY(CALL(API_GetTensorMutableData, GetDataFn, (OrtValue*)v, data));
  return (count > 0 && !*data) ? out_of_memory(k) : NULL;
}

static int is_finite(float v) {
  uint32_t bits; /* by the bits: -ffast-math lets the compiler assume isfinite() is always true */
  memcpy(&bits, &v, sizeof bits);
  return (bits & 0x7f800000u) != 0x7f800000u;
}

/* Both integer nodes: int32 sums, or with the fused node's three extra inputs uint8 requantized. */
static OrtStatus* compute_u8(AdderKernel* k, OrtKernelContext* context, int fused) {
  Run r;
  TRY(prepare(k, context, fused ? 6 : 3, fused ? sizeof(uint8_t) : sizeof(int32_t), &r));
  void *z = NULL, *multiplier = NULL, *bias = NULL, *y_zero_point = NULL;
  TRY(values_of(k, context, 2, "x_zero_point", 1, &z));
  if (fused) {
    TRY(values_of(k, context, 3, "multiplier", r.o, &multiplier));
    TRY(values_of(k, context, 4, "bias", r.o, &bias));
    TRY(values_of(k, context, 5, "y_zero_point", 1, &y_zero_point));
    for (int64_t o = 0; o < r.o; ++o)
      if (!is_finite(((const float*)multiplier)[o]) || !is_finite(((const float*)bias)[o]))
        return fail(k, "inputs multiplier and bias must be finite; filter %lld is not", o, 0, 0, 0);
  }
  if (r.k_len > 2147483647 / 255) /* the int32 sum of 255 per term */
    return fail(k, "a receptive field of %lld values could overflow the int32 output (at most %lld)", r.k_len, 2147483647 / 255, 0, 0);
  if (r.y_count == 0) return NULL;
  Packing p;
  if (packing_of(&r, k, &p) < 0) return fail(k, "the input (%lld x %lld x %lld x %lld) is too large to index", r.n, r.c, r.h, r.w);
  const int64_t scratch_bytes = fused ? checked_mul(checked_mul(checked_mul(thread_count(), r.o), PIXELS_PER_BLOCK), sizeof(int32_t)) : 0;
  if (scratch_bytes < 0 || (uint64_t)scratch_bytes > SIZE_MAX) return fail(k, "%lld filters are too many to index", r.o, 0, 0, 0);
  uint8_t* owned = NULL;
  const uint8_t* wp = packed_weights(k, &r, &p, &owned);
  uint8_t* xp = (uint8_t*)malloc((size_t)p.image_bytes);
  int32_t* scratch = fused ? (int32_t*)malloc((size_t)scratch_bytes) : NULL;
  if (!xp || !wp || (fused && !scratch)) {
    free(xp);
    free(owned);
    free(scratch);
    return out_of_memory(k);
  }
  const Requant q = {(const float*)multiplier, (const float*)bias, fused ? (int32_t)*(const uint8_t*)y_zero_point : 0, (int)k->relu};
  const uint8_t zero_point = *(const uint8_t*)z;
#pragma omp parallel /* one region: the packed image is complete at the barrier closing pack_image's loop */
  {
    pack_image((const uint8_t*)r.x, zero_point, xp, &r, k, &p);
    adder_forward_u8(xp, wp, r.y, fused ? &q : NULL, scratch, &r, k, &p);
  }
  free(xp);
  free(owned);
  free(scratch);
  return NULL;
}

static OrtStatus* compute_integer(void* kernel, OrtKernelContext* context) {
  return compute_u8((AdderKernel*)kernel, context, 0);
}

static OrtStatus* compute_qlinear(void* kernel, OrtKernelContext* context) {
  return compute_u8((AdderKernel*)kernel, context, 1);
}

/* ---- registration ---- */

static void destroy(void* kernel) {
  WeightCache* cache = ((AdderKernel*)kernel)->cache;
  if (cache) {
    free(cache->raw);
    free(cache->packed);
    free(cache);
  }
  free(kernel);
}
static const char* float_name(const OrtCustomOp* op) { (void)op; return "AdderConv2d"; }
static const char* integer_name(const OrtCustomOp* op) { (void)op; return "AdderConv2dInteger"; }
static const char* qlinear_name(const OrtCustomOp* op) { (void)op; return "QLinearAdderConv2d"; }
static const char* op_provider(const OrtCustomOp* op) { (void)op; return "CPUExecutionProvider"; }
static int float_type(const OrtCustomOp* op, size_t index) { (void)op; (void)index; return ONNX_FLOAT; }
static int uint8_type(const OrtCustomOp* op, size_t index) { (void)op; (void)index; return ONNX_UINT8; }
static int int32_type(const OrtCustomOp* op, size_t index) { (void)op; (void)index; return ONNX_INT32; }
static int qlinear_input_type(const OrtCustomOp* op, size_t index) { (void)op; return index == 3 || index == 4 ? ONNX_FLOAT : ONNX_UINT8; }
static size_t six(const OrtCustomOp* op) { (void)op; return 6; }
static size_t three(const OrtCustomOp* op) { (void)op; return 3; }
static size_t two(const OrtCustomOp* op) { (void)op; return 2; }
static size_t one(const OrtCustomOp* op) { (void)op; return 1; }

static int zero_at(const OrtCustomOp* op, size_t index) { (void)op; (void)index; return 0; } /* required; default memory */
static int one_int(const OrtCustomOp* op) { (void)op; return 1; }
static int latest(const OrtCustomOp* op) { (void)op; return 0x7fffffff; }

static OrtCustomOp float_op = {API_VERSION_NEEDED, NULL, float_name, op_provider, float_type, two, float_type, one, NULL, destroy,
                               zero_at, zero_at, zero_at, one_int, one_int, one_int, one_int, create_float, compute_float, NULL,
                               one_int, latest, {0}};
static OrtCustomOp integer_op = {API_VERSION_NEEDED, NULL, integer_name, op_provider, uint8_type, three, int32_type, one, NULL, destroy,
                                 zero_at, zero_at, zero_at, one_int, one_int, one_int, one_int, create_integer, compute_integer, NULL,
                                 one_int, latest, {0}};

static OrtCustomOp qlinear_op = {API_VERSION_NEEDED, NULL, qlinear_name, op_provider, qlinear_input_type, six, uint8_type, one, NULL,
                                 destroy, zero_at, zero_at, zero_at, one_int, one_int, one_int, one_int, create_qlinear,
                                 compute_qlinear, NULL, one_int, latest, {0}};

typedef OrtStatus* (*CreateDomainFn)(const char*, OrtCustomOpDomain**);
typedef OrtStatus* (*DomainAddFn)(OrtCustomOpDomain*, const OrtCustomOp*);
typedef OrtStatus* (*AddDomainFn)(OrtSessionOptions*, OrtCustomOpDomain*);

OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  api = base->GetApi(API_VERSION_NEEDED);
  if (!api) {
    api = base->GetApi(1);
    return CALL(API_CreateStatus, CreateStatusFn, ORT_FAIL, "kdforge's adder operators need ONNX Runtime 1.16 or later");
  }
  OrtCustomOpDomain* domain;
  TRY(CALL(API_CreateCustomOpDomain, CreateDomainFn, "kdforge", &domain));
  TRY(CALL(API_CustomOpDomain_Add, DomainAddFn, domain, &float_op));
  TRY(CALL(API_CustomOpDomain_Add, DomainAddFn, domain, &integer_op));
  TRY(CALL(API_CustomOpDomain_Add, DomainAddFn, domain, &qlinear_op));
  return CALL(API_AddCustomOpDomain, AddDomainFn, options, domain);
}

/* The OpenMP threads that adder kernels called from this thread use: kdforge.export.ort sets it to
 * the session's intra-op thread count before each run, so an adder model timed "on 1 thread" is. */
void kdforge_adder_set_threads(int threads) {
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}
