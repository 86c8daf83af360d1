"""A fused block-sparse attention kernel for the CPU (fp32): the fast path of ``"sasa_blocks"``.

For each (example, head, query block) the kernel multiplies the query block with its key blocks straight out of the
key tensor (runs of consecutive blocks, e.g. the window, in one BLAS call, no copies), applies the mask and a softmax
while the ``[block, keys]`` scores are still in cache, and multiplies with the value blocks. Nothing of size
``[L, heads, keys]`` ever goes through memory, which is what bounds the composite PyTorch path on a CPU. The backward
pass recomputes the probabilities from the saved log-sum-exp (flash-attention style) and runs one thread per
(example, head), so key/value gradients need no atomics.

The C++ source below is compiled on first use with ``torch.utils.cpp_extension.load_inline`` (needs a C++ compiler
and ninja; about 40 s, cached in ``TORCH_EXTENSIONS_DIR`` afterwards) and calls the BLAS ``sgemm`` that libtorch
carries. Where compilation is impossible, or ``SASA_FUSED_KERNEL=0`` is set, :func:`available` is False and the
composite path runs instead; a failure is reported once as a warning. Other dtypes than fp32, and other devices than
the CPU, also take the composite path. Attention dropout is applied inside the kernel with a counter-based hash mask
(replayed, not stored, in the backward pass).

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
#include <cstring>
#include <utility>
#include <vector>

extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                       const int*, const float*, const int*, const float*, float*, const int*);

// Row-major C[M, N] = op(A) @ op(B) + beta * C. A is stored [M, K] (or [K, M] when ta), B [K, N] (or [N, K] when tb).
static void gemm(bool ta, bool tb, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                 float* C, int ldc, float beta) {
  const char a = tb ? 'T' : 'N', b = ta ? 'T' : 'N';
  const float one = 1.f;
  sgemm_(&a, &b, &N, &M, &K, &one, B, &ldb, A, &lda, &beta, C, &ldc);
}

// The key blocks of one query block as runs (first block, count) of consecutive blocks, plus their total width.
static int runs_of(const int* idx, int num, int bs, std::vector<std::pair<int, int>>& runs) {
  runs.clear();
  for (int t = 0; t < num;) {
    int c = 1;
    while (t + c < num && idx[t + c] == idx[t] + c) ++c;
    runs.emplace_back(idx[t], c);
    t += c;
  }
  return num * bs;
}

// scores[r, :] = softmax(scale * scores[r, :] + bias); writes the log-sum-exp of each row.
static void softmax_rows(float* s, const float* bias, int rows, int W, float scale, float* lse) {
  for (int r = 0; r < rows; ++r) {
    float* __restrict sr = s + (size_t)r * W;
    float m = -1e30f;
    for (int c = 0; c < W; ++c) { sr[c] = sr[c] * scale + bias[c]; m = sr[c] > m ? sr[c] : m; }
    float sum = 0.f;
    for (int c = 0; c < W; ++c) { sr[c] = expf(sr[c] - m); sum += sr[c]; }
    const float inv = 1.f / sum;
    for (int c = 0; c < W; ++c) sr[c] *= inv;
    lse[r] = m + logf(sum);
  }
}

static void key_bias(const bool* valid, const std::vector<std::pair<int, int>>& runs, int bs, std::vector<float>& bias) {
  int off = 0;
  for (const auto& run : runs)
    for (int x = 0; x < run.second * bs; ++x) bias[off++] = valid[(int64_t)run.first * bs + x] ? 0.f : -1e30f;
}

// Attention dropout: keep probability (query token t, key token j) of head bh unless a counter-based hash of
// (seed, bh, t, j) falls below p. The same hash replays the mask in the backward pass; nothing is stored.
static inline float uniform(uint64_t seed, uint64_t bh, uint64_t t, uint64_t j) {
  uint64_t x = seed ^ (bh * 0x9E3779B97F4A7C15ULL) ^ (t * 0xC2B2AE3D27D4EB4FULL) ^ (j * 0x165667B19E3779F9ULL);
  x ^= x >> 30; x *= 0xBF58476D1CE4E5B9ULL; x ^= x >> 27; x *= 0x94D049BB133111EBULL; x ^= x >> 31;
  return (float)(x >> 40) * (1.0f / 16777216.0f);
}

// Multiply row r (query token t) of s by the dropout mask / (1 - p); columns follow the runs of key blocks.
static void drop(float* sr, const std::vector<std::pair<int, int>>& runs, int bs, uint64_t seed, int64_t bh,
                 int64_t t, float p) {
  const float keep_scale = 1.f / (1.f - p);
  int off = 0;
  for (const auto& run : runs)
    for (int x = 0; x < run.second * bs; ++x, ++off)
      sr[off] *= uniform(seed, bh, t, (int64_t)run.first * bs + x) >= p ? keep_scale : 0.f;
}

torch::Tensor dropout_keep(int64_t seed, int64_t BH, int64_t L, double p) {  // the dense mask, for tests
  auto keep = torch::zeros({BH, L, L}, torch::kBool);
  bool* K = keep.data_ptr<bool>();
  for (int64_t bh = 0; bh < BH; ++bh)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t j = 0; j < L; ++j) K[(bh * L + t) * L + j] = uniform(seed, bh, t, j) >= (float)p;
  return keep;
}

// q, k, v and the output are [B, L, H, D] memory (the projections' own layout): row t of head h of example b starts
// at ((b * L + t) * H + h) * D, consecutive rows of a head are H * D floats apart (the BLAS leading dimension).
std::vector<torch::Tensor> forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor kv_num,
                                   torch::Tensor kv_idx, torch::Tensor valid, int64_t bs, double scale,
                                   double dropout, int64_t seed) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), D = q.size(3), n = L / bs, ld = H * D;
  auto out = torch::zeros_like(q);
  auto lse = torch::zeros({B * H, L}, q.options());
  const float *Q = q.data_ptr<float>(), *K = k.data_ptr<float>(), *V = v.data_ptr<float>();
  const int *NUM = kv_num.data_ptr<int>(), *IDX = kv_idx.data_ptr<int>();
  const bool* VALID = valid.data_ptr<bool>();
  float *O = out.data_ptr<float>(), *LSE = lse.data_ptr<float>();
  at::parallel_for(0, B * H * n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s, bias;
    std::vector<std::pair<int, int>> runs;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bh = row / n, i = row % n, b = bh / H, h = bh % H;
      const int num = NUM[b * n + i];
      if (num == 0) continue;  // a padding query block: no keys, zero output
      const int W = runs_of(IDX + (b * n + i) * n, num, bs, runs);
      s.resize((size_t)bs * W); bias.resize(W);
      key_bias(VALID + b * L, runs, bs, bias);
      const int64_t query_at = ((b * L + i * bs) * H + h) * D;
      int off = 0;
      for (const auto& run : runs) {
        const int64_t key_at = ((b * L + (int64_t)run.first * bs) * H + h) * D;
        gemm(false, true, bs, run.second * bs, D, Q + query_at, ld, K + key_at, ld, s.data() + off, W, 0.f);
        off += run.second * bs;
      }
      softmax_rows(s.data(), bias.data(), bs, W, (float)scale, LSE + bh * L + i * bs);
      if (dropout > 0)
        for (int r = 0; r < bs; ++r) drop(s.data() + (size_t)r * W, runs, bs, seed, bh, i * bs + r, (float)dropout);
      off = 0;
      for (const auto& run : runs) {
        const int64_t key_at = ((b * L + (int64_t)run.first * bs) * H + h) * D;
        gemm(false, false, bs, D, run.second * bs, s.data() + off, W, V + key_at, ld, O + query_at, ld,
             off == 0 ? 0.f : 1.f);
        off += run.second * bs;
      }
    }
  });
  return {out, lse};
}

std::vector<torch::Tensor> backward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor out,
                                    torch::Tensor lse, torch::Tensor grad, torch::Tensor kv_num, torch::Tensor kv_idx,
                                    torch::Tensor valid, int64_t bs, double scale, double dropout, int64_t seed) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), D = q.size(3), n = L / bs, ld = H * D;
  auto dq = torch::zeros_like(q), dk = torch::zeros_like(k), dv = torch::zeros_like(v);
  const float *Q = q.data_ptr<float>(), *K = k.data_ptr<float>(), *V = v.data_ptr<float>();
  const float *O = out.data_ptr<float>(), *LSE = lse.data_ptr<float>(), *G = grad.data_ptr<float>();
  const int *NUM = kv_num.data_ptr<int>(), *IDX = kv_idx.data_ptr<int>();
  const bool* VALID = valid.data_ptr<bool>();
  float *DQ = dq.data_ptr<float>(), *DK = dk.data_ptr<float>(), *DV = dv.data_ptr<float>();
  // One task per (example, head): the key/value gradients of a head are written by one thread only.
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p, dp, pd, dd, bias, delta(bs);
    std::vector<std::pair<int, int>> runs;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t i = 0; i < n; ++i) {
        const int num = NUM[b * n + i];
        if (num == 0) continue;
        const int W = runs_of(IDX + (b * n + i) * n, num, bs, runs);
        p.resize((size_t)bs * W); dp.resize((size_t)bs * W); bias.resize(W);
        key_bias(VALID + b * L, runs, bs, bias);
        const int64_t query_at = ((b * L + i * bs) * H + h) * D;
        const float *q_row = Q + query_at, *o_row = O + query_at, *g_row = G + query_at;
        const float* lse_row = LSE + bh * L + i * bs;
        int off = 0;
        for (const auto& run : runs) {
          const int64_t key_at = ((b * L + (int64_t)run.first * bs) * H + h) * D;
          gemm(false, true, bs, run.second * bs, D, q_row, ld, K + key_at, ld, p.data() + off, W, 0.f);
          gemm(false, true, bs, run.second * bs, D, g_row, ld, V + key_at, ld, dp.data() + off, W, 0.f);
          off += run.second * bs;
        }
        // pd: the probabilities the forward multiplied with V (dropped), p: before dropout.
        float* dropped = p.data();
        if (dropout > 0) { pd.resize((size_t)bs * W); dd.resize((size_t)bs * W); dropped = pd.data(); }
        for (int r = 0; r < bs; ++r) {
          float d = 0.f;
          for (int c = 0; c < D; ++c) d += g_row[r * ld + c] * o_row[r * ld + c];
          delta[r] = d;
          float* __restrict pr = p.data() + (size_t)r * W;
          float* __restrict dpr = dp.data() + (size_t)r * W;
          const float shift = lse_row[r];
          for (int c = 0; c < W; ++c) pr[c] = expf(pr[c] * (float)scale + bias[c] - shift);  // probabilities
          if (dropout > 0) {  // dP = (dO V^T) * mask / (1 - p); dV takes the dropped probabilities
            float* __restrict pdr = pd.data() + (size_t)r * W;
            float* __restrict ddr = dd.data() + (size_t)r * W;
            for (int c = 0; c < W; ++c) { pdr[c] = pr[c]; ddr[c] = 1.f; }
            drop(pdr, runs, bs, seed, bh, i * bs + r, (float)dropout);
            drop(ddr, runs, bs, seed, bh, i * bs + r, (float)dropout);
            for (int c = 0; c < W; ++c) dpr[c] *= ddr[c];
          }
          for (int c = 0; c < W; ++c) dpr[c] = pr[c] * (dpr[c] - delta[r]) * (float)scale;  // d(scores, unscaled)
        }
        off = 0;
        for (const auto& run : runs) {
          const int64_t key_at = ((b * L + (int64_t)run.first * bs) * H + h) * D;
          const int width = run.second * bs;
          gemm(false, false, bs, D, width, dp.data() + off, W, K + key_at, ld, DQ + query_at, ld, 1.f);
          gemm(true, false, width, D, bs, dp.data() + off, W, q_row, ld, DK + key_at, ld, 1.f);
          gemm(true, false, width, D, bs, dropped + off, W, g_row, ld, DV + key_at, ld, 1.f);
          off += width;
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
            extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
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

    The projections arrive as ``[B, H, L, D]`` views of ``[B, L, H, D]`` memory; the kernel reads that memory as it
    is (no head-major copies) and writes the output in the layout the caller reshapes to ``[B, L, hidden]``.
    ``dropout`` drops attention probabilities (inverted dropout); the mask comes from a hash of ``seed`` (drawn from
    torch's generator when ``None``, so ``torch.manual_seed`` makes it reproducible) and the token indices.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout > 0 else 0
    q, k, v = (t.transpose(1, 2).contiguous() for t in (query, key, value))  # no copy when already [B, L, H, D]
    return _FusedBlockAttention.apply(q, k, v, layout.kv_num_blocks.contiguous(), layout.kv_indices.contiguous(),
                                      layout.token_valid.contiguous(), layout.block_size, float(scaling),
                                      float(dropout), seed)


def dropout_keep(seed: int, batch_heads: int, length: int, dropout: float) -> torch.Tensor:
    """``[B*H, L, L]`` bool: the keep mask :func:`fused_block_attention` applies for ``seed`` (for tests)."""
    return _load().dropout_keep(seed, batch_heads, length, dropout)
