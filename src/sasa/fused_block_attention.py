"""A fused block-sparse attention kernel for the CPU (fp32): the fast path of ``"sasa_blocks"``.

For each (example, head, query block) the kernel computes the scores ``S [block, keys]`` of the query block against
its key blocks, runs the softmax while they are still in cache and multiplies with the value blocks. Nothing of size
``[L, heads, keys]`` ever goes through memory, which is what bounds the composite PyTorch path on a CPU. The
backward pass recomputes the probabilities from the saved log-sum-exp (flash-attention style) and runs one thread per
(example, head), so key/value gradients need no atomics.

Queries, keys and values are read in place from the projections' ``[B, L, H, D]`` memory. Each thread copies the key
and value blocks it uses, on first use, into a head-major scratch in the forms its products read (``K^T`` pre-scaled
for the scores, ``V`` for the output; the backward pass also ``K`` and ``V^T``): a block gathered from anywhere in the
sequence is then one contiguous run, transposed once per head instead of once per use, and no ``[B, H, L, D]`` copy is
made per call.

All products go through one register-tiled micro-kernel (``tile``: a 4x4 or 8x2 tile of SIMD vectors, the left
operand broadcast from memory) written with GCC/Clang vector extensions, so the same source builds for AVX-512, AVX2
or SSE, whatever ``-march=native`` finds; its right operand is taken in L1-sized chunks. Block sizes and head dims
that are not multiples of the vector width take padded columns and a scalar tail.

The C++ source below is compiled on first use with ``torch.utils.cpp_extension.load_inline`` (needs a C++ compiler
and ninja; about 40 s, cached in ``TORCH_EXTENSIONS_DIR`` afterwards). Where compilation is impossible, or
``SASA_FUSED_KERNEL=0`` is set, :func:`available` is False and the composite path runs instead; a failure is reported
once as a warning. Other dtypes than fp32, and other devices than the CPU, also take the composite path. Attention
dropout is applied inside the kernel with a counter-based hash mask (replayed, not stored, in the backward pass).

This file is shipped inside checkpoints (it imports only torch).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import warnings

import torch

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// One SIMD register of floats through GCC/Clang vector extensions: AVX-512, AVX or SSE, whatever -march=native has.
#if defined(__AVX512F__)
#define SASA_VL 16
#elif defined(__AVX__)
#define SASA_VL 8
#else
#define SASA_VL 4
#endif
constexpr int VL = SASA_VL;
typedef float vf __attribute__((vector_size(4 * SASA_VL)));
typedef float vf_unaligned __attribute__((vector_size(4 * SASA_VL), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * SASA_VL)));
typedef uint32_t vu __attribute__((vector_size(4 * SASA_VL)));

static inline vf load(const float* p) { return *(const vf_unaligned*)p; }
static inline void store(float* p, vf x) { *(vf_unaligned*)p = x; }
static inline vf splat(float s) {  // one vbroadcastss (adding s to a zero vector would cost an addition)
  const vf x = {s};
  return __builtin_shuffle(x, (vi){});
}

// Rows of the right-hand side of a product: `count` rows from `rows` on (the product gives their stride). A product
// runs over a list of them, e.g. the key blocks of one query block wherever they lie in the key tensor.
struct Run {
  const float* rows;
  int count;
};

// out[m, 0:N] (+)= sum_k A[m * sm + k * sk] * Y_k[0:N] for m < M, where Y_0, Y_1, ... are the rows of `runs` in
// order (row stride ldy): the one matrix product of this file. Every product of attention has this shape with the
// left side broadcast from memory, so strided operands (rows of one head inside a [B, L, H, D] tensor, columns of
// a score tile, key blocks anywhere in the sequence) are read in place. A register tile of R rows x NV vectors.
template <int R, int NV>
static inline void tile(float* out, int64_t ldo, const float* A, int64_t sm, int64_t sk, const Run* runs,
                        int num_runs, int64_t ldy, int column, bool accumulate) {
  vf acc[R][NV];
  if (accumulate) {
    for (int m = 0; m < R; ++m)
      for (int v = 0; v < NV; ++v) acc[m][v] = load(out + m * ldo + v * VL);
  } else {
    for (int m = 0; m < R; ++m)
      for (int v = 0; v < NV; ++v) acc[m][v] = splat(0.f);
  }
  const float* a_k = A;
  for (int run = 0; run < num_runs; ++run) {
    const float* y_k = runs[run].rows + column;
    for (int k = 0; k < runs[run].count; ++k, y_k += ldy, a_k += sk) {
      vf y[NV];
      for (int v = 0; v < NV; ++v) y[v] = load(y_k + v * VL);
      for (int m = 0; m < R; ++m) {
        const vf a = splat(a_k[m * sm]);
        for (int v = 0; v < NV; ++v) acc[m][v] += a * y[v];
      }
    }
  }
  for (int m = 0; m < R; ++m)
    for (int v = 0; v < NV; ++v) store(out + m * ldo + v * VL, acc[m][v]);
}

template <int R, int NV>
static inline void tile_rows(float* out, int64_t ldo, int M, const float* A, int64_t sm, int64_t sk, const Run* runs,
                             int num_runs, int64_t ldy, int column, bool accumulate) {
  int m = 0;
  for (; m + R <= M; m += R)
    tile<R, NV>(out + m * ldo + column, ldo, A + m * sm, sm, sk, runs, num_runs, ldy, column, accumulate);
  for (; m < M; ++m)
    tile<1, NV>(out + m * ldo + column, ldo, A + m * sm, sm, sk, runs, num_runs, ldy, column, accumulate);
}

static void product_in_cache(float* out, int64_t ldo, int M, int N, const float* A, int64_t sm, int64_t sk,
                             const Run* runs, int num_runs, int64_t ldy, bool accumulate) {
  constexpr int R = VL == 16 ? 4 : 2;  // 16 (AVX-512) or 8 accumulators of 4 vectors
  int n = 0;
  for (; n + 4 * VL <= N; n += 4 * VL) tile_rows<R, 4>(out, ldo, M, A, sm, sk, runs, num_runs, ldy, n, accumulate);
  for (; n + 2 * VL <= N; n += 2 * VL)
    tile_rows<2 * R, 2>(out, ldo, M, A, sm, sk, runs, num_runs, ldy, n, accumulate);
  for (; n + VL <= N; n += VL) tile_rows<2 * R, 1>(out, ldo, M, A, sm, sk, runs, num_runs, ldy, n, accumulate);
  for (; n < N; ++n)  // columns past the last whole vector
    for (int m = 0; m < M; ++m) {
      float s = accumulate ? out[m * ldo + n] : 0.f;
      const float* a_k = A + m * sm;
      for (int run = 0; run < num_runs; ++run)
        for (int x = 0; x < runs[run].count; ++x, a_k += sk) s += *a_k * runs[run].rows[x * ldy + n];
      out[m * ldo + n] = s;
    }
}

// Every tile of output rows passes over all rows of `runs`: they are taken in chunks of at most 24 KB, which stay in
// L1 while all tiles pass over them (accumulating in `out` from the second chunk on).
static void product(float* out, int64_t ldo, int M, int N, const float* A, int64_t sm, int64_t sk, const Run* runs,
                    int num_runs, int64_t ldy, bool accumulate) {
  const int chunk_rows = std::max(1, 24576 / (int)(sizeof(float) * N));
  for (int first = 0; first < num_runs;) {
    int last = first, rows = 0;
    do rows += runs[last++].count; while (last < num_runs && rows + runs[last].count <= chunk_rows);
    product_in_cache(out, ldo, M, N, A, sm, sk, runs + first, last - first, ldy, accumulate);
    A += rows * sk;
    accumulate = true;
    first = last;
  }
}

static void product(float* out, int64_t ldo, int M, int N, const float* A, int64_t sm, int64_t sk, int K,
                    const float* Y, int64_t ldy, bool accumulate) {
  const Run run{Y, K};
  product(out, ldo, M, N, A, sm, sk, &run, 1, ldy, accumulate);
}

// exp(x) for x <= 0 (Cephes' polynomial after 2^n range reduction); exactly 0 below -87.
static inline vf exp_polynomial(vf r) {  // exp(r) for |r| <= ln(2) / 2
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r * r + r + 1.f;
}
#if defined(__AVX512F__)
static inline vf exp_nonpositive(vf x) {  // rounding and 2^n scaling in one instruction each
  const __mmask16 normal = _mm512_cmp_ps_mask((__m512)x, (__m512)splat(-87.f), _CMP_GE_OQ);
  const __m512 n =
      _mm512_roundscale_ps((__m512)(x * 1.44269504088896341f), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const vf nf = (vf)n;
  const vf r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  return (vf)_mm512_maskz_scalef_ps(normal, (__m512)exp_polynomial(r), n);
}
#else
static inline vf exp_nonpositive(vf x) {
  const vi underflow = x < -87.f;
  x = x < -87.f ? splat(-87.f) : x;
  const vi n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, vi);  // round to nearest for x <= 0
  const vf nf = __builtin_convertvector(n, vf);
  const vf scale = (vf)((n + 127) << 23);
  return (vf)((vi)(exp_polynomial(x - nf * 0.693359375f + nf * 2.12194440e-4f) * scale) & ~underflow);
}
#endif

// Attention dropout: a counter-based hash of (seed, head, query token t, key token j) decides each keep, so the
// backward pass replays the mask instead of storing it. mix is a bijection of 32 bits (lowbias32).
template <typename U>
static inline U mix(U x) {
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
  return x;
}
static inline uint32_t head_key(int64_t seed, int64_t bh) {
  const uint32_t s = mix(mix((uint32_t)seed) ^ mix((uint32_t)((uint64_t)seed >> 32) + 0x9e3779b9u));
  return mix(s ^ mix((uint32_t)bh + 0x632be5abu));
}
// Kept iff the top 24 bits of the hash reach the threshold ceil(p * 2^24).
static inline uint32_t drop_threshold(double p) { return (uint32_t)std::ceil(p * 16777216.0); }
// Whether (query token t, key token j) is kept, from pair = t * L + j (mod 2^32): one pair (uint32_t) or VL (vu).
template <typename U>
static inline auto kept(uint32_t key, U pair, uint32_t threshold) {
  return (mix(key ^ pair) >> 8) >= threshold;
}

torch::Tensor dropout_keep(int64_t seed, int64_t BH, int64_t L, double p) {  // the dense mask, for tests
  auto keep = torch::zeros({BH, L, L}, torch::kBool);
  bool* KEEP = keep.data_ptr<bool>();
  const uint32_t threshold = drop_threshold(p);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const uint32_t key = head_key(seed, bh);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t j = 0; j < L; ++j) KEEP[(bh * L + t) * L + j] = kept(key, (uint32_t)(t * L + j), threshold);
  }
  return keep;
}

// A [B, L, H, D] float tensor with unit stride over D, any other strides: the rows of one head are `row` apart.
struct Heads {
  float* data;
  int64_t batch, row, head;
  explicit Heads(const torch::Tensor& t)
      : data(t.data_ptr<float>()), batch(t.stride(0)), row(t.stride(1)), head(t.stride(2)) {
    TORCH_CHECK(t.dim() == 4 && t.stride(3) == 1, "expected [B, L, H, D] with contiguous D");
  }
  float* at(int64_t b, int64_t h, int64_t token) const { return data + b * batch + h * head + token * row; }
};

// One stage of an in-register transpose of a VL x VL tile (rows x[0..VL)): swaps its off-diagonal S x S blocks.
template <int S>
static inline void transpose_stage(vf* x) {
  vi low, high;
  for (int l = 0; l < VL; ++l) low[l] = (l & S) ? VL + l - S : l, high[l] = (l & S) ? VL + l : l + S;
  for (int i = 0; i < VL; ++i)
    if (!(i & S)) {
      const vf a = x[i], b = x[i + S];
      x[i] = __builtin_shuffle(a, b, low);
      x[i + S] = __builtin_shuffle(a, b, high);
    }
}

// out [D, b] <- factor * x^T for b rows of x (stride ld): whole VL x VL tiles in registers, the rest element-wise.
static void transpose_rows(float* out, const float* x, int64_t ld, int bs, int D, float factor) {
  if (bs % VL || D % VL) {
    for (int d = 0; d < D; ++d)
      for (int c = 0; c < bs; ++c) out[d * bs + c] = x[c * ld + d] * factor;
    return;
  }
  for (int c = 0; c < bs; c += VL)
    for (int d = 0; d < D; d += VL) {
      vf tile[VL];
      for (int l = 0; l < VL; ++l) tile[l] = load(x + (c + l) * ld + d) * factor;
      if (VL >= 16) transpose_stage<8>(tile);
      if (VL >= 8) transpose_stage<4>(tile);
      transpose_stage<2>(tile);
      transpose_stage<1>(tile);
      for (int l = 0; l < VL; ++l) store(out + (d + l) * bs + c, tile[l]);
    }
}

static int padded(int64_t x) { return (int)((x + VL - 1) / VL * VL); }

// What a pass reads of a key block: K^T [D, b] (pre-scaled, for the scores), K [b, D], V^T [D, b], V [b, D].
enum Form { KEYS_T, KEYS, VALUES_T, VALUES, NUM_FORMS };

// A thread's scratch. Key/value blocks are copied head-major on first use, in the forms its pass reads: a block
// gathered from anywhere in the sequence is then one contiguous run, transposed once per head, not once per use, and
// only the blocks a thread needs are ever copied (or paged in).
struct Scratch {
  std::vector<float> p, dp, dropped, multipliers, row_values, row_delta;
  std::vector<int> key_tokens;  // of the current query block, layout order, padded to a whole vector
  std::vector<Run> runs[NUM_FORMS];  // the current query block's key blocks, per form (one run each)
  int bs, D;
  std::vector<Form> forms;
  int64_t slot;                    // floats per copied block: one [b, D] matrix per form
  std::unique_ptr<float[]> copies;  // uninitialised: a block's slot is written before it is read
  std::vector<int64_t> copied_for;  // per key block: the (example * H + head) its slot holds, or -1
  Scratch(int64_t n, int bs, int D, std::vector<Form> forms)
      : bs(bs), D(D), forms(forms), slot((int64_t)forms.size() * bs * D), copies(new float[n * slot]),
        copied_for(n, -1) {}

  // Gathers the `num` key blocks `idx` of one query block of head (b, h); returns the number of key tokens.
  int gather(const int* idx, int num, const Heads& k, const Heads& v, int64_t b, int64_t h, int64_t H, float scale) {
    const int W = num * bs, SW = padded(W);
    key_tokens.resize(SW);
    for (int f = 0; f < NUM_FORMS; ++f) runs[f].resize(num);
    for (int t = 0; t < num; ++t) {
      const int64_t first = (int64_t)idx[t] * bs;
      float* block = copies.get() + idx[t] * slot;
      const bool fresh = copied_for[idx[t]] != b * H + h;
      copied_for[idx[t]] = b * H + h;
      for (size_t x = 0; x < forms.size(); ++x, block += bs * D) {
        const bool transposed = forms[x] == KEYS_T || forms[x] == VALUES_T;
        runs[forms[x]][t] = Run{block, transposed ? D : bs};  // D rows of b, or b rows of D
        if (!fresh) continue;
        const Heads& src = forms[x] == KEYS_T || forms[x] == KEYS ? k : v;
        const float* rows = src.at(b, h, first);
        if (transposed) {
          transpose_rows(block, rows, src.row, bs, D, forms[x] == KEYS_T ? scale : 1.f);
        } else {
          for (int c = 0; c < bs; ++c) std::memcpy(block + c * D, rows + c * src.row, sizeof(float) * D);
        }
      }
      for (int c = 0; c < bs; ++c) key_tokens[t * bs + c] = (int)(first + c);
    }
    for (int c = W; c < SW; ++c) key_tokens[c] = key_tokens[0];  // padding columns: any real token
    return W;
  }
};

// out [b, SW] <- x [b rows of ld] . Y^T for the key blocks Y^T [D, b] of `blocks`: scores (x = q, Y^T = scaled K^T)
// or dP (x = dO, Y^T = V^T); columns past the W key tokens are `fill`.
static void block_products(float* out, int SW, const float* x, int64_t ld, const std::vector<Run>& blocks, int bs,
                           float fill) {
  for (size_t t = 0; t < blocks.size(); ++t) product(out + t * bs, SW, bs, bs, x, ld, 1, &blocks[t], 1, bs, false);
  const int W = (int)blocks.size() * bs;
  for (int r = 0; r < bs; ++r)
    for (int c = W; c < SW; ++c) out[r * SW + c] = fill;
}

// Scores of key tokens that are padding: -1e30, zero after the softmax.
static void mask_invalid_keys(float* s, int SW, int bs, int W, const std::vector<int>& key_tokens, const bool* valid) {
  for (int c = 0; c < W; ++c)
    if (!valid[key_tokens[c]])
      for (int r = 0; r < bs; ++r) s[r * SW + c] = -1e30f;
}

// The scores s [b, SW] of one query block (rows q_rows, stride ld) against the key blocks `w` gathered: padding
// columns -inf, keys that are padding tokens -1e30. The forward pass and the backward pass (which recomputes them) both
// take them from here, so their masks cannot differ.
static void scores(float* s, int SW, const float* q_rows, int64_t ld, const Scratch& w, int bs, int W,
                   const bool* valid) {
  block_products(s, SW, q_rows, ld, w.runs[KEYS_T], bs, -INFINITY);
  mask_invalid_keys(s, SW, bs, W, w.key_tokens, valid);
}

// Dropout of the probabilities p [b, SW] of query tokens first_query.. (inverted: kept ones scaled by 1/(1-p));
// `dropped` gets the result and `multipliers`, when given, the factors (the backward pass applies them to dP).
static void drop(const float* p, float* dropped, int SW, int bs, const std::vector<int>& key_tokens, uint32_t key,
                 int64_t first_query, int64_t L, double rate, float* multipliers) {
  const uint32_t threshold = drop_threshold(rate);
  const float keep_scale = (float)(1.0 / (1.0 - rate));
  for (int r = 0; r < bs; ++r) {
    const vu row = (vu){} + (uint32_t)((first_query + r) * L);
    for (int c = 0; c < SW; c += VL) {
      vu columns;
      for (int l = 0; l < VL; ++l) columns[l] = (uint32_t)key_tokens[c + l];
      const vi keep = kept(key, row + columns, threshold);
      const vf multiplier = (vf)((vi)splat(keep_scale) & keep);
      store(dropped + r * SW + c, load(p + r * SW + c) * multiplier);
      if (multipliers) store(multipliers + r * SW + c, multiplier);
    }
  }
}

static inline float horizontal_max(vf x) {
  float m = x[0];
  for (int l = 1; l < VL; ++l) m = std::max(m, x[l]);
  return m;
}
static inline float horizontal_sum(vf x) {
  float s = 0.f;
  for (int l = 0; l < VL; ++l) s += x[l];
  return s;
}

// q, k, v: [B, L, H, D], any strides with contiguous D (the projections' memory, read in place). Returns the output
// [B, L, H, D] and the log-sum-exp of every query's scores [B * H, L].
std::vector<torch::Tensor> forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor kv_num,
                                   torch::Tensor kv_idx, torch::Tensor valid, int64_t bs, double scale,
                                   double dropout, int64_t seed) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), D = q.size(3), n = L / bs;
  auto out = torch::empty({B, L, H, D}, q.options());
  auto lse = torch::empty({B * H, L}, q.options());
  const Heads Q(q), K(k), V(v), O(out);
  const int *NUM = kv_num.data_ptr<int>(), *IDX = kv_idx.data_ptr<int>();
  const bool* VALID = valid.data_ptr<bool>();
  float* LSE = lse.data_ptr<float>();
  at::parallel_for(0, B * H * n, 1, [&](int64_t begin, int64_t end) {
    Scratch w(n, (int)bs, (int)D, {KEYS_T, VALUES});
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bh = row / n, i = row % n, b = bh / H, h = bh % H;
      const int num = NUM[b * n + i];
      float* o = O.at(b, h, i * bs);
      if (num == 0) {  // a padding query block: no keys, zero output
        for (int r = 0; r < bs; ++r) std::memset(o + r * O.row, 0, sizeof(float) * D), LSE[bh * L + i * bs + r] = 0.f;
        continue;
      }
      const int W = w.gather(IDX + (b * n + i) * n, num, K, V, b, h, H, (float)scale), SW = padded(W);
      w.p.resize((size_t)bs * SW);
      w.row_values.resize(bs);
      float* s = w.p.data();
      scores(s, SW, Q.at(b, h, i * bs), Q.row, w, (int)bs, W, VALID + b * L);
      for (int r = 0; r < bs; ++r) {  // softmax over the row's keys; normalised on the output row below
        float* x = s + r * SW;
        vf m = splat(-1e30f), sum = splat(0.f);
        for (int c = 0; c < SW; c += VL) m = load(x + c) > m ? load(x + c) : m;
        const vf row_max = splat(horizontal_max(m));
        for (int c = 0; c < SW; c += VL) {
          const vf e = exp_nonpositive(load(x + c) - row_max);
          store(x + c, e);
          sum += e;
        }
        const float total = horizontal_sum(sum);
        w.row_values[r] = 1.f / total;
        LSE[bh * L + i * bs + r] = row_max[0] + std::log(total);
      }
      if (dropout > 0) drop(s, s, SW, (int)bs, w.key_tokens, head_key(seed, bh), i * bs, L, dropout, nullptr);
      product(o, O.row, (int)bs, (int)D, s, SW, 1, w.runs[VALUES].data(), num, D, false);  // P . V
      for (int r = 0; r < bs; ++r)
        for (int d = 0; d < D; ++d) o[r * O.row + d] *= w.row_values[r];
    }
  });
  return {out, lse};
}

std::vector<torch::Tensor> backward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor out,
                                    torch::Tensor lse, torch::Tensor grad, torch::Tensor kv_num, torch::Tensor kv_idx,
                                    torch::Tensor valid, int64_t bs, double scale, double dropout, int64_t seed) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), D = q.size(3), n = L / bs;
  auto dq = torch::zeros_like(q), dk = torch::zeros_like(k), dv = torch::zeros_like(v);
  const Heads Q(q), K(k), V(v), O(out), G(grad), DQ(dq), DK(dk), DV(dv);
  const float* LSE = lse.data_ptr<float>();
  const int *NUM = kv_num.data_ptr<int>(), *IDX = kv_idx.data_ptr<int>();
  const bool* VALID = valid.data_ptr<bool>();
  const float fscale = (float)scale;
  // One task per (example, head): the key/value gradients of a head are written by one thread only.
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    Scratch w(n, (int)bs, (int)D, {KEYS_T, KEYS, VALUES_T});
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const uint32_t key = head_key(seed, bh);
      for (int64_t i = 0; i < n; ++i) {
        const int num = NUM[b * n + i];
        if (num == 0) continue;
        const int W = w.gather(IDX + (b * n + i) * n, num, K, V, b, h, H, fscale), SW = padded(W);
        const float *q_rows = Q.at(b, h, i * bs), *o_rows = O.at(b, h, i * bs), *g_rows = G.at(b, h, i * bs);
        w.p.resize((size_t)bs * SW);
        w.dp.resize((size_t)bs * SW);
        w.row_delta.resize(bs);
        float *p = w.p.data(), *dp = w.dp.data();
        scores(p, SW, q_rows, Q.row, w, (int)bs, W, VALID + b * L);  // the forward's scores again
        block_products(dp, SW, g_rows, G.row, w.runs[VALUES_T], (int)bs, 0.f);  // dP = dO . V^T
        for (int r = 0; r < bs; ++r) {  // P = exp(S - lse), then dS = P * (dP - delta) * scale
          float delta = 0.f;
          for (int d = 0; d < D; ++d) delta += g_rows[r * G.row + d] * o_rows[r * O.row + d];
          const vf row_lse = splat(LSE[bh * L + i * bs + r]);
          for (int c = 0; c < SW; c += VL) store(p + r * SW + c, exp_nonpositive(load(p + r * SW + c) - row_lse));
          w.row_delta[r] = delta;
        }
        const float* dropped = p;  // what the forward multiplied with V
        if (dropout > 0) {
          w.dropped.resize((size_t)bs * SW);
          w.multipliers.resize((size_t)bs * SW);
          drop(p, w.dropped.data(), SW, (int)bs, w.key_tokens, key, i * bs, L, dropout, w.multipliers.data());
          for (size_t x = 0; x < (size_t)bs * SW; x += VL) store(dp + x, load(dp + x) * load(w.multipliers.data() + x));
          dropped = w.dropped.data();
        }
        for (int r = 0; r < bs; ++r) {  // the gradient of the unscaled q . k (masked keys: P = 0, dP finite)
          const vf delta = splat(w.row_delta[r]);
          for (int c = 0; c < SW; c += VL)
            store(dp + r * SW + c, load(p + r * SW + c) * (load(dp + r * SW + c) - delta) * fscale);
        }
        product(DQ.at(b, h, i * bs), DQ.row, (int)bs, (int)D, dp, SW, 1, w.runs[KEYS].data(), num, D, false);
        for (int t = 0; t < num; ++t) {  // dK_t = dS[:, t]^T . q and dV_t = P[:, t]^T . dO, accumulated
          const int64_t first = (int64_t)w.key_tokens[t * bs];
          product(DK.at(b, h, first), DK.row, (int)bs, (int)D, dp + t * bs, 1, SW, (int)bs, q_rows, Q.row, true);
          product(DV.at(b, h, first), DV.row, (int)bs, (int)D, dropped + t * bs, 1, SW, (int)bs, g_rows, G.row, true);
        }
      }
    }
  });
  return {dq, dk, dv};
}
"""

#: Set to 1 to see the compiler's output when the kernel is built (and the full log when the build fails).
VERBOSE_BUILD_VARIABLE = "SASA_KERNEL_VERBOSE"
#: Set to 0 to never build or use the fused kernel (the composite path runs instead).
ENABLE_VARIABLE = "SASA_FUSED_KERNEL"
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]

_module = None
_failed = False


def _file_digest() -> str:
    """A digest of this file (kernel source and Python glue): the identity of this version of the kernel."""
    try:
        with open(__file__, "rb") as handle:
            return hashlib.sha1(handle.read()).hexdigest()
    except OSError:
        return hashlib.sha1(_SOURCE.encode()).hexdigest()


_VERSION = _file_digest()[:12]


def _cpu_flags() -> str:
    """This CPU's instruction-set flags: the build uses -march=native, so a cached build must never be loaded on a CPU
    lacking its instructions (e.g. a home directory shared across a cluster)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _compiler_identity() -> str:
    """The C++ compiler torch will call (``$CXX``, default ``c++``) and its ``--version`` banner."""
    compiler = os.environ.get("CXX", "c++")
    try:
        banner = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        banner = "unavailable"
    return f"{compiler}\n{banner}"


def build_name() -> str:
    """The extension's name, which keys its build cache (``TORCH_EXTENSIONS_DIR``): a digest of everything that changes
    the binary (kernel source, torch version and C++ ABI, Python, compiler and flags, CPU), so environments that share
    the cache (a virtualenv and a remote-code user, two torch versions) never rebuild each other's kernel."""
    parts = [
        _SOURCE,
        torch.__version__,
        str(torch._C._GLIBCXX_USE_CXX11_ABI),
        platform.python_version(),
        _compiler_identity(),
        " ".join(_CFLAGS + _LDFLAGS),
        _cpu_flags(),
    ]
    return "sasa_fused_block_attention_" + hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


def available() -> bool:
    """Whether the fused kernel is (or can be) compiled here; compiles it on the first call."""
    return _load() is not None


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside torch, transformers and SASA's code."""
    here = os.path.dirname(os.path.abspath(__file__))
    skipped = (here, os.path.dirname(torch.__file__), "transformers", "<frozen", "importlib")
    frame, level = sys._getframe(1), 1  # level 1: the caller of this function, the one that warns
    while frame is not None and any(part in frame.f_code.co_filename for part in skipped):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 2


def _load():
    global _module, _failed
    if _module is not None or _failed:
        return _module
    if os.environ.get(ENABLE_VARIABLE, "1") == "0":
        _failed = True
        return None
    verbose = os.environ.get(VERBOSE_BUILD_VARIABLE, "0") not in ("", "0")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return _give_up(f"no C++ compiler: {compiler!r} is not on PATH (set CXX, or install g++)")
    try:
        from torch.utils.cpp_extension import _get_build_directory, load_inline

        name = build_name()
        directory = _get_build_directory(name, verbose=False)
        if not os.path.exists(os.path.join(directory, f"{name}.so")):
            _announce_build(directory)
        with _quiet(unless=verbose):
            _module = load_inline(name=name, cpp_sources=[_SOURCE], functions=["forward", "backward", "dropout_keep"],
                                  extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS, verbose=verbose)
    except Exception as error:  # no ninja, a failed build: fall back, say so once, in one line
        if verbose:
            print(str(error), file=sys.stderr)
        building = "Error building extension" in str(error)
        return _give_up("the C++ build failed" if building else f"{type(error).__name__}: {error}".splitlines()[0])
    return _module


def _give_up(reason: str) -> None:
    """Stop trying to build the kernel; one warning line (pointing at the user's call) says why and what runs."""
    global _failed
    _failed = True
    warnings.warn(
        f"SASA's fused CPU attention kernel is unavailable ({reason[:160]}); using the slower composite sasa_blocks "
        f"path. {VERBOSE_BUILD_VARIABLE}=1 shows the build log, {ENABLE_VARIABLE}=0 skips the build.",
        RuntimeWarning, stacklevel=_user_stacklevel())


def _announce_build(directory: str) -> None:
    """One line before the first build (about 40 s on 2 cores) says what is happening, where it goes, how to skip it."""
    print(f"SASA: compiling the fused CPU attention kernel once (~40 s; cached in {directory}; "
          f"{ENABLE_VARIABLE}=0 skips it)", file=sys.stderr, flush=True)


class _quiet:
    """Silences torch's build banner, compiler output and compiler-check warnings (shown with ``unless=True``)."""

    def __init__(self, unless: bool):
        self.unless = unless

    def __enter__(self):
        if self.unless:
            return self
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")
        sys.stdout.flush(), sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        self.sink = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.sink, 1), os.dup2(self.sink, 2)
        return self

    def __exit__(self, *exc_info):
        if self.unless:
            return False
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(self.saved[0], 1), os.dup2(self.saved[1], 2)
        for descriptor in (*self.saved, self.sink):
            os.close(descriptor)
        self.warnings.__exit__(*exc_info)
        return False


@torch.compiler.assume_constant_result
def _kernel_available() -> bool:
    """:func:`available`, seen by ``torch.compile`` as a constant (the build happens outside any graph)."""
    return available()


# The kernel as PyTorch operators (torch.library): torch.compile traces through them (fake implementations give the
# output shapes, no graph break) and autograd reaches the backward kernel. The operator names carry this file's digest:
# two checkpoints with the same code share one operator, another version of the code defines its own.
_FORWARD_NAME = f"block_attention_forward_{_VERSION}"
_BACKWARD_NAME = f"block_attention_backward_{_VERSION}"


def _defined(name: str):
    try:
        return getattr(torch.ops.sasa, name)
    except AttributeError:
        return None


def _kernel_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_num: torch.Tensor, kv_idx: torch.Tensor,
                    valid: torch.Tensor, seed: torch.Tensor, size: int, scale: float,
                    dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = _load().forward(q, k, v, kv_num, kv_idx, valid, size, scale, dropout, int(seed.item()))
    return out, lse


def _kernel_forward_shapes(q, k, v, kv_num, kv_idx, valid, seed, size, scale, dropout):
    batch, length, heads, _ = q.shape
    return q.new_empty(q.shape).contiguous(), q.new_empty((batch * heads, length))


def _kernel_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                     grad: torch.Tensor, kv_num: torch.Tensor, kv_idx: torch.Tensor, valid: torch.Tensor,
                     seed: torch.Tensor, size: int, scale: float,
                     dropout: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = _load().backward(q, k, v, out, lse, grad, kv_num, kv_idx, valid, size, scale, dropout,
                                  int(seed.item()))
    return dq, dk, dv


def _kernel_backward_shapes(q, k, v, out, lse, grad, kv_num, kv_idx, valid, seed, size, scale, dropout):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _save_for_backward(ctx, inputs, output) -> None:
    q, k, v, kv_num, kv_idx, valid, seed, size, scale, dropout = inputs
    ctx.save_for_backward(q, k, v, *output, kv_num, kv_idx, valid, seed)
    ctx.meta = (size, scale, dropout)


def _backward(ctx, grad, grad_lse):
    q, k, v, out, lse, kv_num, kv_idx, valid, seed = ctx.saved_tensors
    dq, dk, dv = _backward_op(q, k, v, out, lse, grad.contiguous(), kv_num, kv_idx, valid, seed, *ctx.meta)
    return dq, dk, dv, None, None, None, None, None, None, None


def _define_operators():
    forward, backward = _defined(_FORWARD_NAME), _defined(_BACKWARD_NAME)
    if forward is not None and backward is not None:  # defined by another copy of this very file
        return forward.default, backward.default
    backward = torch.library.custom_op(f"sasa::{_BACKWARD_NAME}", _kernel_backward, mutates_args=())
    backward.register_fake(_kernel_backward_shapes)
    forward = torch.library.custom_op(f"sasa::{_FORWARD_NAME}", _kernel_forward, mutates_args=())
    forward.register_fake(_kernel_forward_shapes)
    forward.register_autograd(_backward, setup_context=_save_for_backward)
    return _defined(_FORWARD_NAME).default, _defined(_BACKWARD_NAME).default


_forward_op, _backward_op = _define_operators()


def fused_kernel_usable(query: torch.Tensor) -> bool:
    """Whether this call can take the fused kernel (CPU, fp32) and the kernel is there."""
    return query.device.type == "cpu" and query.dtype == torch.float32 and _kernel_available()


def fused_block_attention(query, key, value, layout, scaling: float, dropout: float = 0.0,
                          seed: int | torch.Tensor | None = None) -> torch.Tensor:
    """``query/key/value [B, H, L, D]`` (fp32, CPU) → ``[B, L, H, D]``, the same function as the other backends.

    The projections arrive as ``[B, H, L, D]`` views of ``[B, L, H, D]`` memory; the kernel reads them in place (each
    thread copies the key/value blocks it uses into its own scratch: at most ``2 * L * D`` floats forward and
    ``3 * L * D`` backward per thread) and writes the output in the layout the caller reshapes to ``[B, L, hidden]``.
    ``dropout`` drops attention probabilities (inverted dropout); the mask comes from a hash of ``seed`` (an int or a
    one-element int64 tensor; drawn from torch's generator when ``None``, so ``torch.manual_seed`` makes it
    reproducible) and the token indices.
    """
    if seed is None:
        seed = torch.randint(0, 2**62, (1,)) if dropout > 0 else torch.zeros(1, dtype=torch.long)
    elif not isinstance(seed, torch.Tensor):
        seed = torch.tensor([seed], dtype=torch.long)
    # [B, L, H, D] views: the projections' own memory; only a non-unit stride over D needs a copy.
    q, k, v = (t.transpose(1, 2) if t.stride(-1) == 1 else t.transpose(1, 2).contiguous() for t in (query, key, value))
    out, _ = _forward_op(q, k, v, layout.kv_num_blocks.contiguous(), layout.kv_indices.contiguous(),
                         layout.token_valid.contiguous(), seed, layout.block_size, float(scaling), float(dropout))
    return out


def dropout_keep(seed: int, batch_heads: int, length: int, dropout: float) -> torch.Tensor:
    """``[B*H, L, L]`` bool: the keep mask :func:`fused_block_attention` applies for ``seed`` (for tests)."""
    return _load().dropout_keep(seed, batch_heads, length, dropout)
