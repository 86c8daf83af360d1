"""A fused block-sparse attention kernel for the CPU (fp32): the fast path of ``"sasa_blocks"``.

For each (example, head, query block) the kernel computes the transposed scores ``S^T [keys, block]`` of the query
block against its key blocks, read in place wherever they lie in the sequence, runs the softmax while they are still
in cache (vectorised over the block's queries, so no horizontal reductions), and multiplies with the value blocks.
Nothing of size ``[L, heads, keys]`` ever goes through memory, which is what bounds the composite PyTorch path on a
CPU. The backward pass recomputes the probabilities from the saved log-sum-exp (flash-attention style) and runs one
thread per (example, head), so key/value gradients need no atomics.

All products go through one register-tiled micro-kernel (``tile``: a 4x4 or 8x2 tile of SIMD vectors, the left
operand broadcast from memory) written with GCC/Clang vector extensions, so the same source builds for AVX-512, AVX2
or SSE, whatever ``-march=native`` finds; block sizes and head dims that are not multiples of the vector width take
padded columns and a scalar tail. Keys and values are copied head-major once per call so that a gathered block is
one contiguous run of memory.

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
import warnings

import torch

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <vector>

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
static inline vu lanes() { vu x; for (int l = 0; l < VL; ++l) x[l] = l; return x; }

// Rows of the right-hand side of a product: `count` rows from `rows` on (the product gives their stride). A product runs over
// a list of them, e.g. the key blocks of one query block wherever they lie in the key tensor.
struct Run {
  const float* rows;
  int count;
};

// out[m, 0:N] (+)= sum_k A[m * sm + k * sk] * Y_k[0:N] for m < M, where Y_0, Y_1, ... are the rows of `runs` in
// order (row stride ldy): the one matrix product of this file. Every product of attention has this shape with the
// left side broadcast from memory, so strided operands (rows of one head inside a [B, L, H, D] tensor, transposed
// score tiles, key blocks anywhere in the sequence) are read in place. A register tile of R rows x NV vectors.
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

static void product(float* out, int64_t ldo, int M, int N, const float* A, int64_t sm, int64_t sk, const Run* runs,
                    int num_runs, int64_t ldy, bool accumulate) {
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

static void product(float* out, int64_t ldo, int M, int N, const float* A, int64_t sm, int64_t sk, int K,
                    const float* Y, int64_t ldy, bool accumulate) {
  const Run run{Y, K};
  product(out, ldo, M, N, A, sm, sk, &run, 1, ldy, accumulate);
}

// exp(x) for x <= 0 (Cephes' polynomial after 2^n range reduction); exactly 0 below -87.
static inline vf exp_nonpositive(vf x) {
  const vi underflow = x < -87.f;
  x = x < -87.f ? splat(-87.f) : x;
  const vi n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, vi);  // round to nearest for x <= 0
  const vf nf = __builtin_convertvector(n, vf);
  const vf r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const vf scale = (vf)((n + 127) << 23);
  return (vf)((vi)(p * scale) & ~underflow);
}

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
// Whether (query token t, key token j) is kept: one query (uint32_t) or VL consecutive queries (vu) at once.
template <typename U>
static inline auto kept(uint32_t key, U t, int64_t L, int64_t j, uint32_t threshold) {
  return (mix(key ^ (t * (uint32_t)L + (uint32_t)j)) >> 8) >= threshold;
}

torch::Tensor dropout_keep(int64_t seed, int64_t BH, int64_t L, double p) {  // the dense mask, for tests
  auto keep = torch::zeros({BH, L, L}, torch::kBool);
  bool* KEEP = keep.data_ptr<bool>();
  const uint32_t threshold = drop_threshold(p);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const uint32_t key = head_key(seed, bh);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t j = 0; j < L; ++j)
        KEEP[(bh * L + t) * L + j] = kept(key, (uint32_t)t, L, j, threshold);
  }
  return keep;
}

// scores^T [W, QW] (one row per key token, one column per query token of the block) *= keep / (1 - p); the
// multipliers go to `multipliers` too when given (the backward pass applies them to dP as well).
static void drop(float* s, int QW, const std::vector<int>& key_tokens, uint32_t key, int64_t first_query, int64_t L,
                 double p, float* multipliers) {
  const uint32_t threshold = drop_threshold(p);
  const float keep_scale = (float)(1.0 / (1.0 - p));
  for (size_t c = 0; c < key_tokens.size(); ++c)
    for (int r = 0; r < QW; r += VL) {
      const vi keep = kept(key, lanes() + (uint32_t)(first_query + r), L, key_tokens[c], threshold);
      const vf multiplier = (vf)((vi)splat(keep_scale) & keep);
      store(s + c * QW + r, load(s + c * QW + r) * multiplier);
      if (multipliers) store(multipliers + c * QW + r, multiplier);
    }
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

// The per-thread scratch of one (example, head, query block).
struct Scratch {
  std::vector<float> qt, gt, p, dp, kept, multipliers, row_values;
  std::vector<int> key_tokens;
  std::vector<Run> key_runs, value_runs;
};

// x^T [D, QW] <- scale * rows 0..bs of x (row stride ld); columns bs..QW are zero.
static void transpose_block(const float* x, int64_t ld, int bs, int D, int QW, float scale, std::vector<float>& out) {
  out.assign((size_t)D * QW, 0.f);
  for (int r = 0; r < bs; ++r)
    for (int d = 0; d < D; ++d) out[(size_t)d * QW + r] = x[r * ld + d] * scale;
}

// The keys of one query block: their token indices (layout order) and their rows in k and v, one run per block.
static int gather_keys(const int* idx, int num, int bs, const Heads& k, const Heads& v, int64_t b, int64_t h,
                       Scratch& w) {
  w.key_tokens.resize((size_t)num * bs);
  w.key_runs.resize(num);
  w.value_runs.resize(num);
  for (int t = 0; t < num; ++t) {
    for (int c = 0; c < bs; ++c) w.key_tokens[t * bs + c] = idx[t] * bs + c;
    w.key_runs[t] = Run{k.at(b, h, (int64_t)idx[t] * bs), (int)bs};
    w.value_runs[t] = Run{v.at(b, h, (int64_t)idx[t] * bs), (int)bs};
  }
  return num * bs;
}

// S^T [W, QW]: S^T[c, r] = y_c . x_r for the rows y_c of `runs` (x^T is [D, QW]); with `valid`, the rows of
// invalid keys are -1e30 (zero after the softmax).
static void scores_t(float* s, int QW, const float* xt, const std::vector<Run>& runs, int64_t ld, int D,
                     const std::vector<int>& key_tokens, const bool* valid) {
  for (size_t t = 0; t < runs.size(); ++t)
    product(s + t * runs[t].count * QW, QW, runs[t].count, QW, runs[t].rows, ld, 1, D, xt, QW, false);
  for (size_t c = 0; valid && c < key_tokens.size(); ++c)
    if (!valid[key_tokens[c]])
      for (int r = 0; r < QW; ++r) s[c * QW + r] = -1e30f;
}

static int padded(int64_t bs) { return (int)((bs + VL - 1) / VL * VL); }

// q, k, v: [B, L, H, D] (any strides with contiguous D; keys and values are fastest head-major). Returns the output
// [B, L, H, D] and the log-sum-exp of every query's scores [B * H, L].
std::vector<torch::Tensor> forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor kv_num,
                                   torch::Tensor kv_idx, torch::Tensor valid, int64_t bs, double scale,
                                   double dropout, int64_t seed) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), D = q.size(3), n = L / bs;
  const int QW = padded(bs);
  auto out = torch::zeros({B, L, H, D}, q.options());
  auto lse = torch::zeros({B * H, L}, q.options());
  const Heads Q(q), K(k), V(v), O(out);
  const int *NUM = kv_num.data_ptr<int>(), *IDX = kv_idx.data_ptr<int>();
  const bool* VALID = valid.data_ptr<bool>();
  float* LSE = lse.data_ptr<float>();
  at::parallel_for(0, B * H * n, 1, [&](int64_t begin, int64_t end) {
    Scratch w;
    w.row_values.resize(QW);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bh = row / n, i = row % n, b = bh / H, h = bh % H;
      const int num = NUM[b * n + i];
      if (num == 0) continue;  // a padding query block: no keys, zero output
      const int W = gather_keys(IDX + (b * n + i) * n, num, (int)bs, K, V, b, h, w);
      transpose_block(Q.at(b, h, i * bs), Q.row, (int)bs, (int)D, QW, (float)scale, w.qt);
      w.p.resize((size_t)W * QW);
      float* s = w.p.data();
      scores_t(s, QW, w.qt.data(), w.key_runs, K.row, (int)D, w.key_tokens, VALID + b * L);
      for (int r = 0; r < QW; r += VL) {  // softmax over keys (rows), vectorised over query tokens (columns)
        vf m = splat(-1e30f), sum = splat(0.f);
        for (int c = 0; c < W; ++c) { const vf x = load(s + (size_t)c * QW + r); m = x > m ? x : m; }
        for (int c = 0; c < W; ++c) {
          const vf e = exp_nonpositive(load(s + (size_t)c * QW + r) - m);
          store(s + (size_t)c * QW + r, e);
          sum += e;
        }
        store(w.row_values.data() + r, 1.f / sum);  // normalised on the output rows below
        for (int l = 0; l < VL && r + l < bs; ++l) LSE[bh * L + i * bs + r + l] = m[l] + std::log(sum[l]);
      }
      if (dropout > 0) drop(s, QW, w.key_tokens, head_key(seed, bh), i * bs, L, dropout, nullptr);
      float* o = O.at(b, h, i * bs);  // out[r, :] = sum_c P^T[c, r] v_c / sum_r
      product(o, O.row, (int)bs, (int)D, s, 1, QW, w.value_runs.data(), num, V.row, false);
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
  const int QW = padded(bs);
  auto dq = torch::zeros_like(q), dk = torch::zeros_like(k), dv = torch::zeros_like(v);
  const Heads Q(q), K(k), V(v), O(out), G(grad), DQ(dq), DK(dk), DV(dv);
  const float* LSE = lse.data_ptr<float>();
  const int *NUM = kv_num.data_ptr<int>(), *IDX = kv_idx.data_ptr<int>();
  const bool* VALID = valid.data_ptr<bool>();
  const float fscale = (float)scale;
  // One task per (example, head): the key/value gradients of a head are written by one thread only.
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    Scratch w;
    std::vector<float> lse_row(QW), delta(QW);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const uint32_t key = head_key(seed, bh);
      for (int64_t i = 0; i < n; ++i) {
        const int num = NUM[b * n + i];
        if (num == 0) continue;
        const int W = gather_keys(IDX + (b * n + i) * n, num, (int)bs, K, V, b, h, w);
        const float *q_rows = Q.at(b, h, i * bs), *o_rows = O.at(b, h, i * bs), *g_rows = G.at(b, h, i * bs);
        transpose_block(q_rows, Q.row, (int)bs, (int)D, QW, fscale, w.qt);
        transpose_block(g_rows, G.row, (int)bs, (int)D, QW, 1.f, w.gt);
        w.p.resize((size_t)W * QW);
        w.dp.resize((size_t)W * QW);
        float *p = w.p.data(), *dp = w.dp.data();
        scores_t(p, QW, w.qt.data(), w.key_runs, K.row, (int)D, w.key_tokens, VALID + b * L);
        scores_t(dp, QW, w.gt.data(), w.value_runs, V.row, (int)D, w.key_tokens, nullptr);  // dP^T = v . dO
        for (int r = 0; r < QW; ++r) {
          lse_row[r] = r < bs ? LSE[bh * L + i * bs + r] : 0.f;
          float d = 0.f;
          for (int c = 0; r < bs && c < D; ++c) d += g_rows[r * G.row + c] * o_rows[r * O.row + c];
          delta[r] = d;
        }
        for (int c = 0; c < W; ++c)  // the probabilities
          for (int r = 0; r < QW; r += VL)
            store(p + (size_t)c * QW + r, exp_nonpositive(load(p + (size_t)c * QW + r) - load(lse_row.data() + r)));
        const float* dropped = p;  // what the forward multiplied with v
        if (dropout > 0) {
          w.kept.assign(p, p + (size_t)W * QW);
          w.multipliers.resize((size_t)W * QW);
          drop(w.kept.data(), QW, w.key_tokens, key, i * bs, L, dropout, w.multipliers.data());
          for (size_t x = 0; x < (size_t)W * QW; x += VL) store(dp + x, load(dp + x) * load(w.multipliers.data() + x));
          dropped = w.kept.data();
        }
        // dS = P * (dP - delta) * scale, the gradient of the unscaled q . k (masked keys: P = 0, and dP is finite).
        for (int c = 0; c < W; ++c)
          for (int r = 0; r < QW; r += VL) {
            float* x = dp + (size_t)c * QW + r;
            store(x, load(p + (size_t)c * QW + r) * (load(x) - load(delta.data() + r)) * fscale);
          }
        product(DQ.at(b, h, i * bs), DQ.row, (int)bs, (int)D, dp, 1, QW, w.key_runs.data(), num, K.row, false);
        for (int t = 0; t < num; ++t) {
          const int64_t first = (int64_t)w.key_tokens[t * bs];
          const size_t at = (size_t)t * bs * QW;
          product(DK.at(b, h, first), DK.row, (int)bs, (int)D, dp + at, QW, 1, (int)bs, q_rows, Q.row, true);
          product(DV.at(b, h, first), DV.row, (int)bs, (int)D, dropped + at, QW, 1, (int)bs, g_rows, G.row, true);
        }
      }
    }
  });
  return {dq, dk, dv};
}
"""

_module = None
_failed = False


def _cpu_tag() -> str:
    """A short fingerprint of this CPU's instruction sets: the build uses -march=native, so a cached build must never
    be loaded on a CPU lacking its instructions (e.g. a home directory shared across a cluster)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return hashlib.sha1(line.encode()).hexdigest()[:10]
    except OSError:
        pass
    return platform.machine() or "cpu"


def available() -> bool:
    """Whether the fused kernel is (or can be) compiled here; compiles it on the first call."""
    return _load() is not None


def _load():
    global _module, _failed
    if _module is not None or _failed:
        return _module
    if os.environ.get("SASA_FUSED_KERNEL", "1") == "0":
        _failed = True
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        _module = load_inline(
            name=f"sasa_fused_block_attention_{_cpu_tag()}",
            cpp_sources=[_SOURCE],
            functions=["forward", "backward", "dropout_keep"],
            extra_cflags=["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
        )
    except Exception as error:  # no compiler, no ninja, no BLAS symbol: fall back, say so once
        _failed = True
        warnings.warn(f"SASA's fused CPU kernel is unavailable ({type(error).__name__}: {error}); using the "
                      "composite sasa_blocks path.", stacklevel=3)
    return _module


class _FusedBlockAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kv_num, kv_idx, valid, size, scale, dropout, seed):
        out, lse = _module.forward(q, k, v, kv_num, kv_idx, valid, size, scale, dropout, seed)
        ctx.save_for_backward(q, k, v, out, lse, kv_num, kv_idx, valid)
        ctx.meta = (size, scale, dropout, seed)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse, kv_num, kv_idx, valid = ctx.saved_tensors
        dq, dk, dv = _module.backward(q, k, v, out, lse, grad.contiguous(), kv_num, kv_idx, valid, *ctx.meta)
        return dq, dk, dv, None, None, None, None, None, None, None


def fused_kernel_usable(query: torch.Tensor) -> bool:
    """Whether this call can take the fused kernel (CPU, fp32) and the kernel is there."""
    return query.device.type == "cpu" and query.dtype == torch.float32 and available()


def fused_block_attention(query, key, value, layout, scaling: float, dropout: float = 0.0,
                          seed: int | None = None) -> torch.Tensor:
    """``query/key/value [B, H, L, D]`` (fp32, CPU) → ``[B, L, H, D]``, the same function as the other backends.

    The projections arrive as ``[B, H, L, D]`` views of ``[B, L, H, D]`` memory; the kernel reads the queries in
    place, copies keys and values head-major once (contiguous blocks to gather) and writes the output in the layout
    the caller reshapes to ``[B, L, hidden]``.
    ``dropout`` drops attention probabilities (inverted dropout); the mask comes from a hash of ``seed`` (drawn from
    torch's generator when ``None``, so ``torch.manual_seed`` makes it reproducible) and the token indices.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout > 0 else 0
    q = query.transpose(1, 2)  # [B, L, H, D]: the projections' own memory, read in place
    # Keys and values head-major ([B, H, L, D] memory, viewed [B, L, H, D]): the blocks a query block gathers from
    # anywhere in the sequence are then contiguous 8 KB runs instead of rows 3 KB apart (~15 % faster overall).
    k, v = (t.contiguous().transpose(1, 2) for t in (key, value))
    if q.stride(-1) != 1:
        q = q.contiguous()
    return _FusedBlockAttention.apply(q, k, v, layout.kv_num_blocks.contiguous(), layout.kv_indices.contiguous(),
                                      layout.token_valid.contiguous(), layout.block_size, float(scaling),
                                      float(dropout), seed)


def dropout_keep(seed: int, batch_heads: int, length: int, dropout: float) -> torch.Tensor:
    """``[B*H, L, L]`` bool: the keep mask :func:`fused_block_attention` applies for ``seed`` (for tests)."""
    return _load().dropout_keep(seed, batch_heads, length, dropout)
