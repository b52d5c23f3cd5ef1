// Runs the v2 CUDA kernels' code (csrc/preprocess/preprocess_rows.h) on the CPU: every block
// of the grid, and in each block every thread, in the order a GPU could (tiled: all threads
// stage, then all threads compute), and compares the output bytes with the CPU library
// (optim_preprocess_cpu / _f32, linked in). Built and run by tests/test_preprocess_kernel_host.py:
//   g++ -std=c++17 -O1 -ffp-contract=off -fsanitize=address,undefined -Icsrc/preprocess
//       tests/preprocess_kernel_host.cpp csrc/preprocess/preprocess_cpu.cpp
// Checks, per case and kernel (direct, tiled): each output byte is written exactly once (a
// write hook counts them; the output is poisoned first), nothing outside the output is
// written, and the bytes are the CPU library's (a NaN matches any NaN: float frames with
// inf/NaN give NaNs whose sign x86 picks by operand order). The staged rows live in a buffer of exactly
// the plan's shared-memory size, poisoned with NaN bytes, so a read past it trips the
// address sanitizer and a read of an unstaged byte shows in float frames.
// Prints one line per case and ends with "N passed, M failed"; exit status 1 on a failure.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <random>
#include <string>
#include <vector>

static uint8_t* g_out = nullptr;  // the output being checked
static size_t g_out_bytes = 0;
static std::vector<uint8_t> g_writes;  // writes per output byte
static long g_stray = 0;               // writes outside the output

static void count_write(const void* p, int bytes) {
  const uint8_t* q = static_cast<const uint8_t*>(p);
  if (q < g_out || q + bytes > g_out + g_out_bytes) {
    ++g_stray;
    return;
  }
  for (int i = 0; i < bytes; ++i) ++g_writes[(size_t)(q - g_out) + i];
}

#define OPTIM_PP_WRITE_HOOK(ptr, bytes) count_write((ptr), (bytes))
#include "preprocess_rows.h"

namespace rows = optim_pp::rows;

struct Case {
  std::string name;
  int64_t n, h, w, c, out_h, out_w;
  int bgr, fp16, in_float;
  float scale, mean[3], std[3];
  int dst_shift;  // output starts this many elements past a 16-byte boundary
  int src_shift;  // frames start this many elements past a 16-byte boundary
  int specials;   // float frames with -0, inf, NaN, huge and fractional values
};

static const char* kernel_name(int k) {
  return k == OPTIM_PP_KERNEL_TILED ? "tiled" : k == OPTIM_PP_KERNEL_DIRECT ? "direct" : "v1";
}

// Runs the grid of plan pl on the CPU, one block after another, as the kernels do: in a
// block, thread (x, y) handles output row blockIdx.x * rows_per_block + y; the tiled kernel
// stages every row's spans (all threads), then computes (all threads).
template <int C, typename T, bool F16>
static void run_grid(const rows::Plan& pl, const rows::Args& a, const T* src, void* dst) {
  constexpr int PX = rows::px_for(F16);
  const bool tiled = pl.kernel == OPTIM_PP_KERNEL_TILED;
  std::vector<uint8_t> smem;
  std::vector<rows::Block> blocks((size_t)pl.rows_per_block);
  std::vector<rows::Spans> spans((size_t)pl.rows_per_block);
  for (uint32_t bx = 0; bx < pl.blocks; ++bx)
    for (int32_t tile = 0; tile < pl.tiles; ++tile) {
      if (tiled) smem.assign((size_t)pl.smem, 0xff);  // exactly the launch's dynamic shared memory
      smem.shrink_to_fit();
      for (int32_t ty = 0; ty < pl.rows_per_block; ++ty) {
        const uint32_t row = bx * (uint32_t)pl.rows_per_block + (uint32_t)ty;
        if (row >= (uint32_t)a.rows) continue;
        blocks[ty] = rows::block_at(a, row, tile, pl.tile_w);
        spans[ty] = rows::spans<C>(a, blocks[ty], src);
        if (tiled)
          for (int32_t tx = 0; tx < pl.threads; ++tx)
            rows::stage(spans[ty], rows::row_smem(smem.data(), ty, pl.stride), pl.stride, tx, pl.threads);
      }
      // __syncthreads()
      for (int32_t ty = 0; ty < pl.rows_per_block; ++ty) {
        const uint32_t row = bx * (uint32_t)pl.rows_per_block + (uint32_t)ty;
        if (row >= (uint32_t)a.rows) continue;
        const T *row0, *row1;
        if (tiled)
          rows::staged_rows(spans[ty], rows::row_smem(smem.data(), ty, pl.stride), pl.stride, &row0, &row1);
        else
          rows::global_rows(spans[ty], &row0, &row1);
        for (int32_t tx = 0; tx < pl.threads; ++tx)
          rows::thread_pixels<PX, C, T, F16>(a, blocks[ty], row0, row1, dst, tx);
      }
    }
}

template <typename T>
static void dispatch(const OptimPreprocessParams& p, const rows::Plan& pl, const T* src, void* dst) {
  const rows::Args a = rows::make_args(p);
  if (p.c == 3)
    p.out_fp16 ? run_grid<3, T, true>(pl, a, src, dst) : run_grid<3, T, false>(pl, a, src, dst);
  else
    p.out_fp16 ? run_grid<1, T, true>(pl, a, src, dst) : run_grid<1, T, false>(pl, a, src, dst);
}

// NaN bits (float32 or float16): any NaN matches any NaN, as x86 itself gives NaNs of either
// sign depending on operand order (and GPU arithmetic the one canonical NaN).
static bool is_nan(uint32_t bits, int bytes) {
  return bytes == 4 ? (bits & 0x7fffffffu) > 0x7f800000u : (bits & 0x7fffu) > 0x7c00u;
}

static int g_passed = 0, g_failed = 0;

static void fail(const Case& k, const char* kernel, const char* what) {
  ++g_failed;
  printf("FAIL %s %s: %s\n", k.name.c_str(), kernel, what);
}

static void run_case(const Case& k, std::mt19937& rng) {
  OptimPreprocessParams p{};
  p.n = k.n, p.h = k.h, p.w = k.w, p.c = k.c, p.out_h = k.out_h, p.out_w = k.out_w;
  p.scale = k.scale, p.bgr = k.bgr, p.out_fp16 = k.fp16;
  for (int i = 0; i < 3; ++i) p.mean[i] = k.mean[i], p.std[i] = k.std[i];
  const int32_t in_bytes = k.in_float ? 4 : 1;
  const size_t in_count = (size_t)(k.n * k.h * k.w * k.c);
  // Frames src_shift elements past a 16-byte boundary (heap blocks are 16-byte aligned), in a
  // block that ends where they end: a read past them trips the address sanitizer.
  std::vector<uint8_t> in_raw((k.src_shift + in_count) * in_bytes);
  if (reinterpret_cast<uintptr_t>(in_raw.data()) & 15) return fail(k, "host", "heap block not 16-byte aligned");
  uint8_t* in = in_raw.data() + k.src_shift * in_bytes;
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t i = 0; i < in_count; ++i) {
    if (!k.in_float) {
      in[i] = (uint8_t)byte(rng);
      continue;
    }
    float v = (float)byte(rng);
    if (k.specials) {
      const float special[] = {-0.f, INFINITY, -INFINITY, NAN, 1e30f, 0.3f, 254.75f, -3.5f};
      if (byte(rng) < 64) v = special[byte(rng) % 8];
    }
    memcpy(in + i * 4, &v, 4);
  }
  const int ob = k.fp16 ? 2 : 4;
  const size_t out_count = (size_t)(k.n * k.c * k.out_h * k.out_w), out_bytes = out_count * ob;
  std::vector<uint8_t> want(out_bytes);
  const int rc = k.in_float ? optim_preprocess_cpu_f32(&p, reinterpret_cast<const float*>(in), want.data())
                            : optim_preprocess_cpu(&p, in, want.data());
  if (rc != 0) return fail(k, "cpu", "optim_preprocess_cpu refused the case");
  std::vector<uint8_t> out_raw(k.dst_shift * ob + out_bytes + 16);  // 16 bytes after it, poisoned too
  if (reinterpret_cast<uintptr_t>(out_raw.data()) & 15) return fail(k, "host", "heap block not 16-byte aligned");
  uint8_t* out = out_raw.data() + k.dst_shift * ob;

  for (int want_kernel : {OPTIM_PP_KERNEL_DIRECT, OPTIM_PP_KERNEL_TILED}) {
    const rows::Plan pl = rows::plan(p, in_bytes, want_kernel);
    const char* kn = kernel_name(want_kernel);
    if (pl.kernel < 0) {
      printf("skip %s %s: the plan refuses it (%d)\n", k.name.c_str(), kn, pl.kernel);
      continue;
    }
    memset(out_raw.data(), 0xff, out_raw.size());  // NaN in float32 and float16
    g_out = out, g_out_bytes = out_bytes, g_stray = 0;
    g_writes.assign(out_bytes, 0);
    if (k.in_float)
      dispatch(p, pl, reinterpret_cast<const float*>(in), out);
    else
      dispatch(p, pl, reinterpret_cast<const uint8_t*>(in), out);
    char why[256] = "";
    size_t bad = 0;
    for (size_t i = 0; i < out_bytes && !bad; ++i)
      if (g_writes[i] != 1) bad = i + 1, snprintf(why, sizeof why, "byte %zu written %d times", i, g_writes[i]);
    for (size_t e = 0; e < out_count && !bad; ++e) {
      uint32_t got_bits = 0, want_bits = 0;
      memcpy(&got_bits, out + e * ob, ob);
      memcpy(&want_bits, want.data() + e * ob, ob);
      if (got_bits != want_bits && !(is_nan(got_bits, ob) && is_nan(want_bits, ob))) {
        bad = e + 1;
        snprintf(why, sizeof why, "element %zu: 0x%x, CPU library 0x%x", e, got_bits, want_bits);
      }
    }
    for (uint8_t* q = out_raw.data(); q < out_raw.data() + out_raw.size() && !bad; ++q)
      if ((q < out || q >= out + out_bytes) && *q != 0xff) bad = 1, snprintf(why, sizeof why, "wrote outside");
    if (g_stray && !bad) bad = 1, snprintf(why, sizeof why, "%ld writes outside the output", g_stray);
    if (bad) {
      fail(k, kn, why);
      continue;
    }
    ++g_passed;
    printf("ok   %-28s %-6s threads %3dx%d px %d tiles %d smem %d\n", k.name.c_str(), kn, pl.threads,
           pl.rows_per_block, pl.px, pl.tiles, pl.smem);
  }
}

static void expect(bool ok, const char* what) {
  if (ok) {
    ++g_passed;
    printf("ok   plan: %s\n", what);
  } else {
    ++g_failed;
    printf("FAIL plan: %s\n", what);
  }
}

static OptimPreprocessParams params(int64_t n, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow, int fp16) {
  OptimPreprocessParams p{};
  p.n = n, p.h = h, p.w = w, p.c = c, p.out_h = oh, p.out_w = ow, p.out_fp16 = fp16, p.scale = 1.f;
  for (int i = 0; i < 3; ++i) p.std[i] = 1.f;
  return p;
}

static void check_plans() {
  // What the v2 plan (OPTIM_PP_KERNEL_AUTO) picks for the shapes, and the fallbacks.
  rows::Plan pl = rows::plan(params(16, 1080, 1920, 3, 640, 640, 0), 1, OPTIM_PP_KERNEL_AUTO);
  expect(pl.kernel == OPTIM_PP_KERNEL_TILED && pl.threads == 160 && pl.tiles == 1 && pl.smem <= 12 * 1024 &&
             pl.rows_per_block == 1 && pl.blocks == 16 * 640,
         "1080x1920 -> 640x640 float32: tiled, 160 threads x 4 pixels, one tile per row, <= 12 KB");
  pl = rows::plan(params(16, 1080, 1920, 3, 640, 640, 1), 1, OPTIM_PP_KERNEL_AUTO);
  expect(pl.kernel == OPTIM_PP_KERNEL_TILED && pl.threads == 80 && pl.px == 8 && pl.rows_per_block == 2 &&
             pl.blocks == 16 * 320,
         "float16: 80 threads x 8 pixels a row, 2 rows a block (5 full warps)");
  pl = rows::plan(params(8, 480, 640, 3, 224, 224, 1), 1, OPTIM_PP_KERNEL_AUTO);
  expect(pl.kernel == OPTIM_PP_KERNEL_TILED && pl.threads == 28 && pl.rows_per_block == 3 && pl.blocks == 598,
         "480x640 -> 224x224 float16: 28 threads x 8 pixels a row, 3 rows a block");
  pl = rows::plan(params(8, 480, 640, 3, 224, 224, 0), 1, OPTIM_PP_KERNEL_AUTO);
  expect(pl.kernel == OPTIM_PP_KERNEL_TILED && pl.threads == 56 && pl.rows_per_block == 2,
         "480x640 -> 224x224 float32: 56 threads a row, 2 rows a block");
  pl = rows::plan(params(16, 1080, 1920, 3, 640, 640, 0), 4, OPTIM_PP_KERNEL_AUTO);
  expect(pl.kernel == OPTIM_PP_KERNEL_TILED && pl.smem <= rows::kSmemTarget && pl.tiles == 2,
         "float frames: tiled, tiles narrowed to fit 24 KB");
  pl = rows::plan(params(1, 6, 40000, 1, 3, 8, 0), 1, OPTIM_PP_KERNEL_AUTO);
  expect(pl.kernel == OPTIM_PP_KERNEL_DIRECT, "40000 -> 8 columns: rows too wide to stage, direct");
  expect(rows::plan(params(1, 6, 40000, 1, 3, 8, 0), 1, OPTIM_PP_KERNEL_TILED).kernel == OPTIM_PP_ERR_KERNEL,
         "tiled asked for where it cannot run: OPTIM_PP_ERR_KERNEL");
  expect(rows::plan(params(70000, 1, 1, 1, 40000, 1, 0), 1, OPTIM_PP_KERNEL_AUTO).kernel == OPTIM_PP_KERNEL_V1,
         "n * out_h past int32: v1");
  expect(rows::plan(params(1, 40000, 40000, 3, 8, 8, 0), 1, OPTIM_PP_KERNEL_AUTO).kernel == OPTIM_PP_KERNEL_V1,
         "a frame past 2^29 elements: v1");
  expect(rows::plan(params(1, 8, 8, 3, 8, 8, 0), 1, OPTIM_PP_KERNEL_V1).kernel == OPTIM_PP_KERNEL_V1, "v1 asked for");
  // The device's uint8 -> float (2^23 + b - 2^23) is the cast, for every byte.
  bool exact = true;
  for (uint32_t b = 0; b < 256; ++b) {
    const uint32_t bits = 0x4b000000u | b;
    float f;
    memcpy(&f, &bits, 4);
    exact = exact && (f - 8388608.f == (float)b);
  }
  expect(exact, "uint8 -> float through 2^23 is exact for 0..255");
}

int main(int argc, char** argv) {
  const char* only = argc > 1 ? argv[1] : nullptr;  // run the cases whose name contains this
  std::mt19937 rng(1234);
  const float im_mean[3] = {0.485f, 0.456f, 0.406f}, im_std[3] = {0.229f, 0.224f, 0.225f};
  std::vector<Case> cases;
  auto add = [&](const char* name, int64_t n, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow, int bgr,
                 int fp16, int in_float, int dst_shift = 0, int src_shift = 0, int specials = 0) {
    Case k{name, n, h, w, c, oh, ow, bgr, fp16, in_float, 1.f / 255, {}, {}, dst_shift, src_shift, specials};
    for (int i = 0; i < 3; ++i) k.mean[i] = im_mean[i], k.std[i] = im_std[i];
    cases.push_back(k);
  };
  for (int fp16 = 0; fp16 < 2; ++fp16) {
    const char* t = fp16 ? "-f16" : "-f32";
    auto nm = [&](const char* base) { return std::string(base) + t; };
    add(nm("1080p-640").c_str(), 1, 1080, 1920, 3, 640, 640, 1, fp16, 0);
    add(nm("480p-224-n2").c_str(), 2, 480, 640, 3, 224, 224, 0, fp16, 0);
    add(nm("1080p-640-float").c_str(), 1, 1080, 1920, 3, 640, 640, 1, fp16, 1);
    add(nm("odd-37x53-19x29").c_str(), 2, 37, 53, 3, 19, 29, 1, fp16, 0);
    add(nm("odd-float").c_str(), 2, 37, 53, 3, 19, 29, 0, fp16, 1);
    add(nm("tail-21x27-16x13").c_str(), 3, 21, 27, 3, 16, 13, 1, fp16, 0);
    add(nm("gray-up-9x6-4x11").c_str(), 2, 9, 6, 1, 4, 11, 1, fp16, 0);
    add(nm("gray-float").c_str(), 2, 9, 6, 1, 14, 23, 0, fp16, 1);
    add(nm("copy-5x7").c_str(), 2, 5, 7, 3, 5, 7, 1, fp16, 0);
    add(nm("copy-gray-33x45").c_str(), 1, 33, 45, 1, 33, 45, 0, fp16, 0);
    add(nm("copy-float-specials").c_str(), 2, 7, 9, 3, 7, 9, 1, fp16, 1, 0, 0, 1);
    add(nm("resize-float-specials").c_str(), 2, 7, 9, 3, 5, 4, 0, fp16, 1, 0, 0, 1);
    add(nm("up-13x17-40x61").c_str(), 1, 13, 17, 3, 40, 61, 0, fp16, 0);
    add(nm("rows-only-20x30-10x30").c_str(), 1, 20, 30, 3, 10, 30, 0, fp16, 0);
    add(nm("cols-only-20x30-20x9").c_str(), 1, 20, 30, 1, 20, 9, 0, fp16, 0);
    add(nm("one-pixel-1x1").c_str(), 2, 1, 1, 3, 1, 1, 1, fp16, 0);
    add(nm("from-one-pixel-1x1-3x5").c_str(), 1, 1, 1, 1, 3, 5, 0, fp16, 0);
    add(nm("wide-4x2000-2x1100").c_str(), 1, 4, 2000, 3, 2, 1100, 1, fp16, 0);
    add(nm("huge-downscale-6x40000").c_str(), 1, 6, 40000, 1, 3, 8, 0, fp16, 0);
    add(nm("dst-unaligned").c_str(), 2, 30, 40, 3, 16, 24, 1, fp16, 0, 1, 0);
    add(nm("src-unaligned").c_str(), 2, 30, 41, 3, 17, 21, 0, fp16, 0, 0, 5);
    add(nm("src-unaligned-float").c_str(), 2, 30, 41, 3, 17, 21, 0, fp16, 1, 3, 1);
  }
  // float16 edges: subnormals (std 3e6), overflow to inf (std 1e-3), -0 (v == mean, std < 0).
  Case edge{"fp16-edges", 1, 6, 5, 3, 6, 5, 0, 1, 0, 1.f, {0.f, 0.f, 128.f}, {3e6f, 1e-3f, -1.f}, 0, 0, 0};
  cases.push_back(edge);
  edge.name = "fp16-edges-resized", edge.out_h = 4, edge.out_w = 9;
  cases.push_back(edge);
  std::uniform_int_distribution<int> size(1, 40), flag(0, 1), shift(0, 7);
  for (int i = 0; i < 60; ++i) {
    const int c = flag(rng) ? 3 : 1, h = size(rng), w = size(rng);
    const int same = shift(rng) == 0;
    const std::string name = "random-" + std::to_string(i);
    add(name.c_str(), 1 + shift(rng) % 3, h, w, c, same ? h : size(rng), same ? w : size(rng), flag(rng), flag(rng),
        flag(rng), shift(rng) % 4, shift(rng));
  }
  if (!only) check_plans();
  for (const Case& k : cases)
    if (!only || k.name.find(only) != std::string::npos) run_case(k, rng);
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
