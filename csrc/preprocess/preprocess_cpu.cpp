// liboptim_preprocess_cpu.so: the fused preprocessing op on the CPU, one output element at a
// time through the same header the CUDA kernel uses (ONNX Runtime runs it for CPU checks).
#include "preprocess.h"

namespace {

template <typename T>
int run(const OptimPreprocessParams* p, const T* src, void* dst) {
  const int err = optim_pp::validate(p, src, dst);
  if (err) return err;
  const int64_t count = optim_pp::output_count(*p);
  for (int64_t i = 0; i < count; ++i) optim_pp::store(*p, dst, i, optim_pp::element(*p, src, i));
  return 0;
}

}  // namespace

extern "C" int optim_preprocess_cpu(const OptimPreprocessParams* p, const uint8_t* src, void* dst) {
  return run(p, src, dst);
}

extern "C" int optim_preprocess_cpu_f32(const OptimPreprocessParams* p, const float* src, void* dst) {
  return run(p, src, dst);
}

extern "C" const char* optim_preprocess_version(void) { return OPTIM_PREPROCESS_VERSION; }
