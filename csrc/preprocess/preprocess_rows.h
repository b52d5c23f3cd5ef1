// The v2 CUDA kernel's work split (preprocess_kernel.cu), written as host+device code so
// tests/test_preprocess_kernel_host.py compiles it with g++ and runs every block and thread
// on the CPU against the CPU library. The arithmetic is preprocess.h's (axis_tap_at,
// bilinear, normalize, float_to_half_bits); only the indexing is new.
//
// A block = output row oy of image n, output columns [ox0, ox0 + tile_w) (threadIdx.y picks
// one of rows_per_block consecutive rows where rows are narrow: a "block" below is one such row).
// One thread = PX consecutive output pixels of that row, all channels (PX = 4 for float32,
// 8 for float16: one 16-byte store per channel plane). The source columns the tile reads,
// [x_lo, x_hi] of rows ty.i0 and ty.i1, are known per block (the taps are monotone in o).
//   tiled:  the block first copies those two row spans into shared memory with 16-byte
//           loads (stage), then each thread reads its taps from there;
//   direct: each thread reads its taps from global memory (no staging; used where the
//           spans do not fit in shared memory, e.g. a huge downscale).
// All index math is int32 within an image (plan() checks the sizes fit, else the v1 kernel
// runs), with one division per block and none per pixel; image bases are int64.
#ifndef OPTIM_PREPROCESS_ROWS_H
#define OPTIM_PREPROCESS_ROWS_H

#include <stdint.h>
#include <string.h>

#include "preprocess.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

// Loops unrolled on the device (ignored by the host compiler).
#if defined(__CUDA_ARCH__)
#define OPTIM_UNROLL _Pragma("unroll")
#define OPTIM_NO_UNROLL _Pragma("unroll 1")
#else
#define OPTIM_UNROLL
#define OPTIM_NO_UNROLL
#endif

// Tests define this to count the bytes each store writes; empty in the libraries.
#ifndef OPTIM_PP_WRITE_HOOK
#define OPTIM_PP_WRITE_HOOK(ptr, bytes) ((void)0)
#endif

namespace optim_pp {
namespace rows {

constexpr int32_t kMaxThreads = 256;
constexpr int32_t kSmemTarget = 24 * 1024;  // per block: keeps several blocks per SM
constexpr int32_t kSmemMax = 48 * 1024;     // without the opt-in attribute

// Pixels per thread: 16 bytes of output per channel plane.
OPTIM_HD constexpr int32_t px_for(bool fp16) { return fp16 ? 8 : 4; }

// 16 bytes moved by one instruction on the device (LDG.128 / STS.128 / STG.128).
#if defined(__CUDACC__)
using Vec16 = uint4;
#else
struct alignas(16) Vec16 {
  uint32_t x, y, z, w;
};
#endif

OPTIM_HD inline Vec16 load16_global(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const uint4*>(p));
#else
  Vec16 v;
  memcpy(&v, p, 16);
  return v;
#endif
}

OPTIM_HD inline void store16(uint8_t* p, const Vec16& v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint4*>(p) = v;
#else
  memcpy(p, &v, 16);
#endif
}

// A frame value as float. uint8 on the device: 2^23 + b is exact in float32, so
// (bits(2^23) | b) - 2^23 is (float)b on the FP32 pipe instead of an I2F conversion
// (quarter rate on sm_90); the same value as the CPU's cast.
OPTIM_HD inline float to_float(float v) { return v; }
OPTIM_HD inline float to_float(uint8_t v) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(__uint_as_float(0x4b000000u | v), 8388608.f);
#else
  return (float)v;
#endif
}

// float16 bits of f, round to nearest even: on the device the hardware conversion (IEEE:
// subnormals, overflow to inf; one cvt.rn.f16x2.f32 per pair), on the host
// float_to_half_bits. Their bits agree except inside NaNs: GPU arithmetic gives the one
// canonical NaN (0x7fffffff, converted to 0x7fff) where x86 gives NaNs of either sign, so a
// NaN output is a NaN on both, its sign and payload the hardware's.
OPTIM_HD inline uint16_t half_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  return float_to_half_bits(f);
#endif
}

OPTIM_HD inline uint32_t half2_bits(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  const __half2 h = __floats2half2_rn(lo, hi);
  return (uint32_t)__half_as_ushort(__low2half(h)) | ((uint32_t)__half_as_ushort(__high2half(h)) << 16);
#else
  return (uint32_t)float_to_half_bits(lo) | ((uint32_t)float_to_half_bits(hi) << 16);
#endif
}

// The op's sizes as int32 (plan() checks they fit) and its constants.
struct Args {
  int64_t n;
  int32_t h, w, out_h, out_w;
  int32_t resize;     // 0 when out_h == h && out_w == w (sample()'s copy case)
  int32_t bgr;
  int32_t in_image;   // h*w*c elements per input image
  int32_t out_plane;  // out_h*out_w elements per output channel plane
  int32_t rows;       // n*out_h: output rows of all images
  float scale;
  float mean[3], std[3];
};

// One block's row and column range, and the source it reads.
struct Block {
  int64_t n;
  int32_t oy, ox0, ox_end;  // output row, columns [ox0, ox_end)
  Tap<int32_t> ty;          // source rows ty.i0, ty.i1 and the vertical weight
  float rx;                 // axis_ratio(w, out_w)
  int32_t x_lo, x_hi;       // source columns read by the whole tile
};

OPTIM_HD inline Block block(const Args& a, int64_t n, int32_t oy, int32_t tile, int32_t tile_w) {
  Block b;
  b.n = n;
  b.oy = oy;
  b.ox0 = tile * tile_w;
  b.ox_end = a.out_w - b.ox0 < tile_w ? a.out_w : b.ox0 + tile_w;
  b.rx = axis_ratio(a.w, a.out_w);
  if (a.resize) {
    b.ty = axis_tap_at<int32_t>(oy, a.h, axis_ratio(a.h, a.out_h));
    b.x_lo = axis_tap_at<int32_t>(b.ox0, a.w, b.rx).i0;
    b.x_hi = axis_tap_at<int32_t>(b.ox_end - 1, a.w, b.rx).i1;
  } else {
    b.ty = Tap<int32_t>{oy, oy, 0.f};
    b.x_lo = b.ox0;
    b.x_hi = b.ox_end - 1;
  }
  return b;
}

// The block of output row `row` = image * out_h + output row (blockIdx.x * blockDim.y +
// threadIdx.y), row tile `tile` (blockIdx.y). One 32-bit division.
OPTIM_HD inline Block block_at(const Args& a, uint32_t row, int32_t tile, int32_t tile_w) {
  const uint32_t n = row / (uint32_t)a.out_h;
  return block(a, n, (int32_t)(row - n * (uint32_t)a.out_h), tile, tile_w);
}

// The bytes of the block's two source row spans in global memory, and where the tiled
// kernel keeps them in shared memory: row r at smem + r*stride + lead[r], with lead[r] the
// span's offset in its 16-byte chunk, so 16-byte chunks stay 16-byte aligned.
struct Spans {
  const uint8_t* g[2];
  int32_t lead[2];
  int32_t nbytes;
  int32_t rows;  // 1 when both taps are the same row (edges, no resize): staged once
};

template <int C, typename T>
OPTIM_HD inline Spans spans(const Args& a, const Block& b, const T* src) {
  const T* img = src + b.n * (int64_t)a.in_image;
  Spans s;
  s.g[0] = reinterpret_cast<const uint8_t*>(img + (b.ty.i0 * a.w + b.x_lo) * C);
  s.g[1] = reinterpret_cast<const uint8_t*>(img + (b.ty.i1 * a.w + b.x_lo) * C);
  s.rows = b.ty.i0 == b.ty.i1 ? 1 : 2;
  s.lead[0] = (int32_t)(reinterpret_cast<uintptr_t>(s.g[0]) & 15u);
  s.lead[1] = (int32_t)(reinterpret_cast<uintptr_t>(s.g[1]) & 15u);
  s.nbytes = (b.x_hi - b.x_lo + 1) * C * (int32_t)sizeof(T);
  return s;
}

// Bytes of shared memory one staged row needs (any lead).
OPTIM_HD inline int32_t row_stride(int32_t nbytes) { return (nbytes + 15 + 15) & ~15; }

// Thread tid of nthreads copies its share of the spans into smem: whole 16-byte chunks with
// one load each (up to 4 loads in flight before their stores), the partial first and last
// chunk of an unaligned span byte by byte (nothing outside the span is read).
OPTIM_HD inline void stage(const Spans& s, uint8_t* smem, int32_t stride, int32_t tid, int32_t nthreads) {
  const int32_t chunks0 = (s.lead[0] + s.nbytes + 15) >> 4;
  const int32_t chunks1 = s.rows == 2 ? (s.lead[1] + s.nbytes + 15) >> 4 : 0;
  const int32_t total = chunks0 + chunks1;
  for (int32_t base = tid; base < total; base += 4 * nthreads) {
    Vec16 v[4];
    bool whole[4];
  OPTIM_UNROLL
    for (int k = 0; k < 4; ++k) {
      const int32_t i = base + k * nthreads;
      whole[k] = false;
      if (i >= total) continue;
      const int r = i < chunks0 ? 0 : 1;
      const int32_t j = i - r * chunks0;
      const int32_t lead = r ? s.lead[1] : s.lead[0];  // selects, not a local-memory array
      const uint8_t* aligned = (r ? s.g[1] : s.g[0]) - lead;
      const int32_t lo = 16 * j, hi = 16 * j + 16;  // chunk bytes, relative to the aligned start
      if (lo >= lead && hi <= lead + s.nbytes) {
        v[k] = load16_global(aligned + lo);
        whole[k] = true;
      } else {
        const int32_t from = lo > lead ? lo : lead;
        const int32_t to = hi < lead + s.nbytes ? hi : lead + s.nbytes;
        OPTIM_NO_UNROLL
        for (int32_t q = from; q < to; ++q) smem[r * stride + q] = aligned[q];
      }
    }
  OPTIM_UNROLL
    for (int k = 0; k < 4; ++k) {
      if (!whole[k]) continue;
      const int32_t i = base + k * nthreads;
      const int r = i < chunks0 ? 0 : 1;
      store16(smem + r * stride + 16 * (i - r * chunks0), v[k]);
    }
  }
}

// Where thread row ty of a tiled block stages its two row spans.
OPTIM_HD inline uint8_t* row_smem(uint8_t* smem, int32_t ty, int32_t stride) { return smem + ty * 2 * stride; }

// Row pointers into the staged copy (tiled; pixel x at row[(x - b.x_lo)*C]).
template <typename T>
OPTIM_HD inline void staged_rows(const Spans& s, const uint8_t* smem, int32_t stride, const T** row0,
                                 const T** row1) {
  *row0 = reinterpret_cast<const T*>(smem + s.lead[0]);
  *row1 = s.rows == 2 ? reinterpret_cast<const T*>(smem + stride + s.lead[1]) : *row0;
}

// Row pointers into global memory (direct; pixel x at row[(x - b.x_lo)*C] as well).
template <typename T>
OPTIM_HD inline void global_rows(const Spans& s, const T** row0, const T** row1) {
  *row0 = reinterpret_cast<const T*>(s.g[0]);
  *row1 = reinterpret_cast<const T*>(s.g[1]);
}

// Writes count (<= PX) consecutive output values of one channel plane at p: one 16-byte
// store when all PX are there and p is 16-byte aligned, else one store per value.
template <int PX, bool F16>
OPTIM_HD inline void store_pixels(uint8_t* p, const float* v, int32_t count) {
  constexpr int32_t bytes = F16 ? 2 : 4;
  static_assert(PX * bytes == 16, "one thread writes 16 bytes per channel plane");
  if (count == PX && (reinterpret_cast<uintptr_t>(p) & 15u) == 0) {
    uint32_t w[4];
  OPTIM_UNROLL
    for (int k = 0; k < 4; ++k) w[k] = F16 ? half2_bits(v[2 * k], v[2 * k + 1]) : float_bits(v[k]);
    OPTIM_PP_WRITE_HOOK(p, 16);
    store16(p, Vec16{w[0], w[1], w[2], w[3]});
    return;
  }
  OPTIM_UNROLL  // the tail of a row, or an unaligned plane (unrolled: v stays in registers)
  for (int32_t j = 0; j < PX; ++j) {
    if (j >= count) break;
    OPTIM_PP_WRITE_HOOK(p + j * bytes, bytes);
    if (F16)
      reinterpret_cast<uint16_t*>(p)[j] = half_bits(v[j]);
    else
      reinterpret_cast<float*>(p)[j] = v[j];
  }
}

// Thread tid of a block: output pixels [ox0 + tid*PX, +PX) of row b.oy (those before
// b.ox_end), every channel, from row0/row1 (pixel x at row[(x - b.x_lo)*C + ic]).
template <int PX, int C, typename T, bool F16>
OPTIM_HD inline void thread_pixels(const Args& a, const Block& b, const T* row0, const T* row1, void* dst,
                                   int32_t tid) {
  const int32_t first = b.ox0 + tid * PX;
  if (first >= b.ox_end) return;
  const int32_t count = b.ox_end - first < PX ? b.ox_end - first : PX;
  int32_t o0[PX], o1[PX];
  float fx[PX];
  OPTIM_UNROLL
  for (int j = 0; j < PX; ++j) {
    const int32_t ox = j < count ? first + j : first + count - 1;  // past the end: a copy, not stored
    if (a.resize) {
      const Tap<int32_t> t = axis_tap_at<int32_t>(ox, a.w, b.rx);
      o0[j] = (t.i0 - b.x_lo) * C;
      o1[j] = (t.i1 - b.x_lo) * C;
      fx[j] = t.frac;
    } else {
      o0[j] = o1[j] = (ox - b.x_lo) * C;
      fx[j] = 0.f;
    }
  }
  constexpr int32_t out_bytes = F16 ? 2 : 4;
  uint8_t* out = static_cast<uint8_t*>(dst) +
                 (b.n * C * (int64_t)a.out_plane + (int64_t)(b.oy * a.out_w + first)) * out_bytes;
  OPTIM_UNROLL
  for (int oc = 0; oc < C; ++oc) {
    const int32_t ic = (int32_t)input_channel(oc, C, a.bgr);
    float v[PX];
  OPTIM_UNROLL
    for (int j = 0; j < PX; ++j) {
      // One code path: without resize o1 == o0 and row1 == row0, and the copy is p00.
      const float p00 = to_float(row0[o0[j] + ic]);
      const float blend =
          bilinear(p00, to_float(row0[o1[j] + ic]), to_float(row1[o0[j] + ic]), to_float(row1[o1[j] + ic]), fx[j],
                   b.ty.frac);
      v[j] = normalize(a.resize ? blend : p00, a.scale, a.mean[oc], a.std[oc]);
    }
    store_pixels<PX, F16>(out + (int64_t)oc * a.out_plane * out_bytes, v, count);
  }
}

// How a call runs: which kernel, and its launch shape.
struct Plan {
  int32_t kernel;             // OPTIM_PP_KERNEL_V1, _DIRECT or _TILED
  int32_t px;                 // pixels per thread
  int32_t threads;            // threads per output row (blockDim.x)
  int32_t rows_per_block;     // output rows per block (blockDim.y): narrow outputs fill a block
  int32_t tile_w, tiles;      // output columns per row tile, row tiles (gridDim.y)
  uint32_t blocks;            // gridDim.x: ceil(n * out_h / rows_per_block)
  int32_t stride, smem;       // tiled: bytes per staged row; dynamic shared memory per block
};

// The sizes fit the int32 index math (validated params).
inline bool fits_int32(const OptimPreprocessParams& p, int32_t in_bytes) {
  const int64_t lim = INT32_MAX / 4;  // headroom for tile ends and byte offsets
  return p.h * p.w * p.c <= lim / in_bytes && p.out_h * p.out_w * p.c <= lim / 4 &&
         p.n <= INT32_MAX / p.out_h;  // gridDim.x = n * out_h
}

inline Args make_args(const OptimPreprocessParams& p) {
  Args a;
  a.n = p.n;
  a.h = (int32_t)p.h;
  a.w = (int32_t)p.w;
  a.out_h = (int32_t)p.out_h;
  a.out_w = (int32_t)p.out_w;
  a.resize = !(p.out_h == p.h && p.out_w == p.w);
  a.bgr = p.bgr;
  a.in_image = (int32_t)(p.h * p.w * p.c);
  a.out_plane = (int32_t)(p.out_h * p.out_w);
  a.rows = (int32_t)(p.n * p.out_h);
  a.scale = p.scale;
  for (int i = 0; i < 3; ++i) {
    a.mean[i] = p.mean[i];
    a.std[i] = p.std[i];
  }
  return a;
}

// Largest staged row (bytes of shared memory) over the tiles of width tile_w, or -1 when
// there are too many tiles to look at.
inline int32_t max_stride(const Args& a, int32_t c, int32_t in_bytes, int32_t tile_w) {
  const int32_t tiles = (a.out_w + tile_w - 1) / tile_w;
  if (tiles > 65536) return -1;
  int64_t most = 0;
  for (int32_t t = 0; t < tiles; ++t) {
    const Block b = block(a, 0, 0, t, tile_w);
    const int64_t nbytes = (int64_t)(b.x_hi - b.x_lo + 1) * c * in_bytes;
    most = nbytes > most ? nbytes : most;
  }
  return most > kSmemMax ? kSmemMax + 1 : row_stride((int32_t)most);
}

// Output rows per block (blockDim.y), 1..8: the fewest that give at least 64 threads with at
// most 1/8 of the warps' lanes idle (80 threads a row: 2 rows, 5 full warps), else the fewest
// idle lanes; within kMaxThreads, the rows there are, and kSmemTarget of staged rows.
inline int32_t rows_per_block(int32_t threads, int64_t rows, int32_t smem_per_row) {
  int32_t best = 1;
  double best_idle = 1.0;
  for (int32_t r = 1; r <= 8 && r <= rows && threads * r <= kMaxThreads; ++r) {
    if (r > 1 && smem_per_row * r > kSmemTarget) break;
    const int32_t t = threads * r, lanes = (t + 31) / 32 * 32;
    const double idle = (double)(lanes - t) / lanes;
    if (t >= 64 && idle <= 0.125) return r;
    if (idle < best_idle - 1e-9) best = r, best_idle = idle;
  }
  return best;
}

// The plan for validated params p with in_bytes-wide frame values (1: uint8, 4: float).
// want: OPTIM_PP_KERNEL_AUTO (tiled where its rows fit in shared memory, else direct; v1
// where the sizes pass int32), or one kernel; kernel = OPTIM_PP_ERR_KERNEL when that one
// cannot run these sizes.
inline Plan plan(const OptimPreprocessParams& p, int32_t in_bytes, int32_t want) {
  Plan pl{};
  if (want == OPTIM_PP_KERNEL_V1 || (want == OPTIM_PP_KERNEL_AUTO && !fits_int32(p, in_bytes))) {
    pl.kernel = OPTIM_PP_KERNEL_V1;
    return pl;
  }
  if (!fits_int32(p, in_bytes) || (want != OPTIM_PP_KERNEL_AUTO && want != OPTIM_PP_KERNEL_DIRECT &&
                                   want != OPTIM_PP_KERNEL_TILED)) {
    pl.kernel = OPTIM_PP_ERR_KERNEL;
    return pl;
  }
  const Args a = make_args(p);
  pl.px = px_for(p.out_fp16 != 0);
  const int64_t per_row = (p.out_w + pl.px - 1) / pl.px;
  pl.threads = (int32_t)(per_row < kMaxThreads ? per_row : kMaxThreads);
  int32_t stride = -1;
  if (want != OPTIM_PP_KERNEL_DIRECT) {
    stride = max_stride(a, (int32_t)p.c, in_bytes, pl.threads * pl.px);
    while (stride >= 0 && 2 * stride > kSmemTarget && pl.threads > 32) {  // narrower tiles, smaller rows
      pl.threads = pl.threads / 2 > 32 ? pl.threads / 2 : 32;
      stride = max_stride(a, (int32_t)p.c, in_bytes, pl.threads * pl.px);
    }
  }
  const bool tiled = stride >= 0 && 2 * stride <= kSmemMax;
  if (want == OPTIM_PP_KERNEL_TILED && !tiled) {
    pl.kernel = OPTIM_PP_ERR_KERNEL;
    return pl;
  }
  pl.kernel = tiled ? OPTIM_PP_KERNEL_TILED : OPTIM_PP_KERNEL_DIRECT;
  if (!tiled) pl.threads = (int32_t)(per_row < kMaxThreads ? per_row : kMaxThreads);
  pl.tile_w = pl.threads * pl.px;
  pl.tiles = (int32_t)((p.out_w + pl.tile_w - 1) / pl.tile_w);
  if (pl.tiles > 65535) {  // gridDim.y
    pl.kernel = want == OPTIM_PP_KERNEL_AUTO ? OPTIM_PP_KERNEL_V1 : OPTIM_PP_ERR_KERNEL;
    return pl;
  }
  const int64_t rows = p.n * p.out_h;
  pl.rows_per_block = rows_per_block(pl.threads, rows, tiled ? 2 * stride : 0);
  pl.blocks = (uint32_t)((rows + pl.rows_per_block - 1) / pl.rows_per_block);
  pl.stride = tiled ? stride : 0;
  pl.smem = tiled ? 2 * stride * pl.rows_per_block : 0;
  return pl;
}

}  // namespace rows
}  // namespace optim_pp

#endif  // OPTIM_PREPROCESS_ROWS_H
