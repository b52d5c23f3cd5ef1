/* C ABI of the fused input-preprocessing op (uint8 NHWC frames -> normalised NCHW).
 *
 * liboptim_preprocess_cpu.so exports optim_preprocess_cpu, liboptim_preprocess_cuda.so
 * exports optim_preprocess_cuda (and, since 1.1.0, the v1 kernel, a kernel chooser and the
 * device's peak bandwidth, below); both export optim_preprocess_version. The arithmetic
 * is in preprocess.h, shared by both. Python reaches this through ctypes with the
 * same struct layout (int64 x6, float, float[3], float[3], int32, int32).
 */
#ifndef OPTIM_PREPROCESS_API_H
#define OPTIM_PREPROCESS_API_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OPTIM_PREPROCESS_VERSION "1.1.0"

/* Negative return codes of optim_preprocess_cpu/_cuda: the call did nothing. */
#define OPTIM_PP_ERR_NULL (-1)     /* params, src or dst is NULL */
#define OPTIM_PP_ERR_SIZE (-2)     /* n, h, w, out_h or out_w <= 0, or the sizes overflow */
#define OPTIM_PP_ERR_CHANNELS (-3) /* c is not 1 or 3 */
#define OPTIM_PP_ERR_STD (-4)      /* std[i] == 0 for a used channel */
#define OPTIM_PP_ERR_KERNEL (-5)   /* optim_preprocess_cuda_kernel: that kernel cannot run these sizes */

/* The CUDA kernels (optim_preprocess_cuda_kernel, optim_preprocess_cuda_kernel_for). */
#define OPTIM_PP_KERNEL_AUTO 0   /* the v2 plan: TILED, else DIRECT, else V1 (optim_preprocess_cuda
                                    runs V1 until v2 has run on a GPU: preprocess_kernel.cu) */
#define OPTIM_PP_KERNEL_V1 1     /* v1: one thread per output element, int64 div/mod (reference) */
#define OPTIM_PP_KERNEL_DIRECT 2 /* v2: a thread per 4 (float16: 8) pixels, taps read from global */
#define OPTIM_PP_KERNEL_TILED 3  /* v2: the same, a block's two source row spans staged in shared memory */

typedef struct {
  int64_t n, h, w, c;      /* input NHWC uint8, c in {1,3} */
  int64_t out_h, out_w;    /* output size; equal to h,w means no resize */
  float scale;             /* multiplies the uint8 value, e.g. 1/255 */
  float mean[3], std[3];   /* per output channel */
  int32_t bgr;             /* 1: input is BGR, output RGB */
  int32_t out_fp16;        /* 1: output float16 bits (uint16), else float32 */
} OptimPreprocessParams;

/* 0 ok, <0 bad params. dst holds n*c*out_h*out_w float32 or uint16 (float16 bits). */
int optim_preprocess_cpu(const OptimPreprocessParams* p, const uint8_t* src, void* dst);

/* src_dev/dst_dev are device pointers, stream a cudaStream_t (NULL: default stream).
 * Returns the cudaError_t of the launch as int (0 ok), <0 bad params. Asynchronous. */
int optim_preprocess_cuda(const OptimPreprocessParams* p, const uint8_t* src_dev, void* dst_dev,
                          void* stream);

/* The same op on frames already converted to float32 (values 0..255), NHWC. TensorRT passes
 * plugins no uint8 tensors, so the ONNX graph casts the uint8 frames first (on the GPU) and
 * the plugin calls this; the ONNX Runtime route calls the CPU variant. */
int optim_preprocess_cpu_f32(const OptimPreprocessParams* p, const float* src, void* dst);
int optim_preprocess_cuda_f32(const OptimPreprocessParams* p, const float* src_dev, void* dst_dev,
                              void* stream);

/* liboptim_preprocess_cuda.so only. The v1 kernel (one thread per output element, 1.0.0's
 * kernel), kept so benchmarks time it next to the current one in the same run. */
int optim_preprocess_cuda_baseline(const OptimPreprocessParams* p, const uint8_t* src_dev, void* dst_dev,
                                   void* stream);

/* One kernel (OPTIM_PP_KERNEL_*) on uint8 (src_float 0) or float32 (src_float 1) frames; the
 * return codes of optim_preprocess_cuda, or OPTIM_PP_ERR_KERNEL. */
int optim_preprocess_cuda_kernel(const OptimPreprocessParams* p, const void* src_dev, int32_t src_float,
                                 void* dst_dev, void* stream, int32_t kernel);

/* The kernel OPTIM_PP_KERNEL_AUTO picks for p (OPTIM_PP_KERNEL_V1/DIRECT/TILED), or <0 for bad
 * params. Host only: no CUDA call. */
int optim_preprocess_cuda_kernel_for(const OptimPreprocessParams* p, int32_t src_float);

/* Peak DRAM bandwidth of CUDA device `device` (-1: the current one) in GB/s, from its memory
 * clock (kHz) and bus width (bits), double data rate: 2 * clock * width / 8. 0 ok, a
 * cudaError_t (>0) when the attributes cannot be read or are 0, OPTIM_PP_ERR_NULL. */
int optim_preprocess_cuda_peak_gbps(int32_t device, double* gbps);

const char* optim_preprocess_version(void);

#ifdef __cplusplus
}
#endif

#endif /* OPTIM_PREPROCESS_API_H */
