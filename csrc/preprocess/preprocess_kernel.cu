// liboptim_preprocess_cuda.so: the fused preprocessing op as a CUDA kernel, one thread per
// output element (grid-stride), through the same header the CPU library uses.
#include <cuda_runtime.h>

#include "preprocess.h"

namespace {

template <typename T>
__global__ void preprocess_kernel(OptimPreprocessParams p, const T* __restrict__ src, void* __restrict__ dst,
                                  int64_t count) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride)
    optim_pp::store(p, dst, i, optim_pp::element(p, src, i));
}

template <typename T>
int launch(const OptimPreprocessParams* p, const T* src_dev, void* dst_dev, void* stream) {
  const int err = optim_pp::validate(p, src_dev, dst_dev);
  if (err) return err;
  const int64_t count = optim_pp::output_count(*p);
  const int threads = 256;
  const int64_t wanted = (count + threads - 1) / threads;
  const unsigned blocks = (unsigned)(wanted < 65536 * 8 ? wanted : 65536 * 8);  // grid-stride beyond
  preprocess_kernel<T><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(*p, src_dev, dst_dev, count);
  return (int)cudaGetLastError();
}

}  // namespace

extern "C" int optim_preprocess_cuda(const OptimPreprocessParams* p, const uint8_t* src_dev, void* dst_dev,
                                     void* stream) {
  return launch(p, src_dev, dst_dev, stream);
}

extern "C" int optim_preprocess_cuda_f32(const OptimPreprocessParams* p, const float* src_dev, void* dst_dev,
                                         void* stream) {
  return launch(p, src_dev, dst_dev, stream);
}

extern "C" const char* optim_preprocess_version(void) { return OPTIM_PREPROCESS_VERSION; }
