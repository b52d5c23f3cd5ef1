// The per-element arithmetic of the fused preprocessing op, shared by the CPU library
// (preprocess_cpu.cpp) and the CUDA kernel (preprocess_kernel.cu) so both compute the
// same bits. No CUDA include: under nvcc OPTIM_HD marks the functions __host__ __device__.
//
// Output element [n, oc, oy, ox] of NCHW [n, c, out_h, out_w], input uint8 NHWC [n, h, w, c]:
//   ic  = (bgr && c == 3) ? 2 - oc : oc
//   v   = src[n, oy, ox, ic] when out_h == h && out_w == w, else bilinear with half-pixel
//         centres (align_corners = false), edge-clamped
//   out = (v * scale - mean[oc]) / std[oc]   in float32; float16 output rounds that to
//         nearest even.
// Every float operation is rounded on its own (no fused multiply-add): the device side
// uses the __f*_rn intrinsics, the host side is built with -ffp-contract=off.
#ifndef OPTIM_PREPROCESS_H
#define OPTIM_PREPROCESS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <initializer_list>

#include "preprocess_api.h"

#if defined(__CUDACC__)
#define OPTIM_HD __host__ __device__
#else
#define OPTIM_HD
#endif

namespace optim_pp {

// Correctly rounded float32 operations that the compiler may not fuse.
OPTIM_HD inline float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
OPTIM_HD inline float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
OPTIM_HD inline float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
OPTIM_HD inline float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

OPTIM_HD inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// IEEE float32 -> float16 bits, round to nearest even; overflow gives inf, tiny values
// become subnormals or zero, NaN stays a (quiet) NaN. Signs are kept (-0 -> 0x8000).
OPTIM_HD inline uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u)  // inf or NaN
    return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x0200u | ((ax >> 13) & 0x3ffu) : 0u));
  if (ax >= 0x477ff000u)  // >= 65520: rounds past the largest half (65504)
    return (uint16_t)(sign | 0x7c00u);
  if (ax >= 0x38800000u) {  // >= 2^-14: a normal half; rebias exponent 127 -> 15
    uint32_t h = (ax - 0x38000000u) >> 13;
    const uint32_t rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return (uint16_t)(sign | h);
  }
  const uint32_t e = ax >> 23;
  if (e < 102u) return (uint16_t)sign;  // below 2^-25: rounds to zero
  // Subnormal half: value / 2^-24 = mantissa (with implicit 1) >> (126 - e).
  const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14..24
  uint32_t h = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (h & 1u))) ++h;
  return (uint16_t)(sign | h);
}

// Which input channel feeds output channel oc.
OPTIM_HD inline int64_t input_channel(int64_t oc, int64_t c, int32_t bgr) {
  return (bgr && c == 3) ? 2 - oc : oc;
}

// Source coordinate of output index o along one axis (half-pixel centres, clamped).
// I is int64_t here and int32_t in the v2 kernels (preprocess_rows.h, sizes checked to fit);
// the float arithmetic is the same, and so are the results.
template <typename I>
struct Tap {
  I i0, i1;
  float frac;
};
using AxisTap = Tap<int64_t>;

// in_size / out_size, the step of axis_tap_at.
OPTIM_HD inline float axis_ratio(int64_t in_size, int64_t out_size) {
  return div((float)in_size, (float)out_size);
}

template <typename I>
OPTIM_HD inline Tap<I> axis_tap_at(I o, I in_size, float ratio) {
  float s = sub(mul(add((float)o, 0.5f), ratio), 0.5f);
  s = s > 0.f ? s : 0.f;
  I i0 = (I)floorf(s);
  i0 = i0 < 0 ? 0 : (i0 > in_size - 1 ? in_size - 1 : i0);
  const I i1 = i0 + 1 < in_size - 1 ? i0 + 1 : in_size - 1;
  return Tap<I>{i0, i1, sub(s, (float)i0)};
}

OPTIM_HD inline AxisTap axis_tap(int64_t o, int64_t in_size, int64_t out_size) {
  return axis_tap_at<int64_t>(o, in_size, axis_ratio(in_size, out_size));
}

// (1-fy)*((1-fx)*p00 + fx*p01) + fy*((1-fx)*p10 + fx*p11): the bilinear blend of the four
// taps, shared by sample() and the v2 kernels (preprocess_rows.h).
OPTIM_HD inline float bilinear(float p00, float p01, float p10, float p11, float fx, float fy) {
  const float top = add(mul(sub(1.f, fx), p00), mul(fx, p01));
  const float bottom = add(mul(sub(1.f, fx), p10), mul(fx, p11));
  return add(mul(sub(1.f, fy), top), mul(fy, bottom));
}

// Value (0..255 as float) of output pixel (oy, ox), input channel ic, of one NHWC image.
// T is uint8_t (frames) or float (frames already cast to float32 on the device, as TensorRT
// hands plugins no uint8 tensors); the arithmetic is the same.
template <typename T>
OPTIM_HD inline float sample(const T* img, int64_t h, int64_t w, int64_t c, int64_t ic,
                             int64_t oy, int64_t ox, int64_t out_h, int64_t out_w) {
  if (out_h == h && out_w == w) return (float)img[(oy * w + ox) * c + ic];
  const AxisTap ty = axis_tap(oy, h, out_h);
  const AxisTap tx = axis_tap(ox, w, out_w);
  const float p00 = (float)img[(ty.i0 * w + tx.i0) * c + ic];
  const float p01 = (float)img[(ty.i0 * w + tx.i1) * c + ic];
  const float p10 = (float)img[(ty.i1 * w + tx.i0) * c + ic];
  const float p11 = (float)img[(ty.i1 * w + tx.i1) * c + ic];
  return bilinear(p00, p01, p10, p11, tx.frac, ty.frac);
}

// (v*scale - mean) / std, exactly that expression in float32.
OPTIM_HD inline float normalize(float v, float scale, float mean, float std) {
  return div(sub(mul(v, scale), mean), std);
}

// Output element idx of the flat NCHW output, as float32.
template <typename T>
OPTIM_HD inline float element(const OptimPreprocessParams& p, const T* src, int64_t idx) {
  const int64_t ox = idx % p.out_w;
  int64_t t = idx / p.out_w;
  const int64_t oy = t % p.out_h;
  t /= p.out_h;
  const int64_t oc = t % p.c;
  const int64_t n = t / p.c;
  const T* img = src + n * p.h * p.w * p.c;
  const float v = sample(img, p.h, p.w, p.c, input_channel(oc, p.c, p.bgr), oy, ox, p.out_h, p.out_w);
  return normalize(v, p.scale, p.mean[oc], p.std[oc]);
}

// Writes element idx as float32 or float16 bits.
OPTIM_HD inline void store(const OptimPreprocessParams& p, void* dst, int64_t idx, float value) {
  if (p.out_fp16)
    static_cast<uint16_t*>(dst)[idx] = float_to_half_bits(value);
  else
    static_cast<float*>(dst)[idx] = value;
}

// a * b, or -1 when it would overflow int64 (a, b > 0).
inline int64_t checked_mul(int64_t a, int64_t b) { return a > INT64_MAX / b ? -1 : a * b; }

// 0 when the call can run, else an OPTIM_PP_ERR_* code.
inline int validate(const OptimPreprocessParams* p, const void* src, const void* dst) {
  if (!p || !src || !dst) return OPTIM_PP_ERR_NULL;
  if (p->n <= 0 || p->h <= 0 || p->w <= 0 || p->out_h <= 0 || p->out_w <= 0) return OPTIM_PP_ERR_SIZE;
  if (p->c != 1 && p->c != 3) return OPTIM_PP_ERR_CHANNELS;
  for (int64_t i = 0; i < p->c; ++i)
    if (p->std[i] == 0.f) return OPTIM_PP_ERR_STD;
  int64_t in = p->n, out = p->n;
  for (int64_t d : {p->h, p->w, p->c}) in = in < 0 ? -1 : checked_mul(in, d);
  for (int64_t d : {p->c, p->out_h, p->out_w}) out = out < 0 ? -1 : checked_mul(out, d);
  return (in < 0 || out < 0) ? OPTIM_PP_ERR_SIZE : 0;
}

// Number of output elements (valid params only).
inline int64_t output_count(const OptimPreprocessParams& p) { return p.n * p.c * p.out_h * p.out_w; }

}  // namespace optim_pp

#endif  // OPTIM_PREPROCESS_H
