"""Fused CPU kernels for the mHC hyper-connection (arXiv 2512.24880), built on first use with
`torch.utils.cpp_extension` (a C++ compiler is needed; the build is cached, by default under
~/.cache/torch_extensions).

Why: at the widths of a CPU model the hyper-connection is memory-bound. The streams x (M tokens, n, C) are n times
the hidden state, and the eager path reads and writes them in a dozen separate kernels per hyper-connection in each
direction. These kernels walk the tokens once per phase, doing all of one token's work (its n x C streams fit in L1)
before moving on:

    read_forward    x  ->  h = sum_i H_pre[i] x_i, H_post, H_res (and P = x phi^T, H~, the RMS for the backward)
    write_forward   x, H_res, H_post, F(h)  ->  x'_i = sum_j H_res[i, j] x_j + H_post[i] F(h)
    write_backward  dL/dx'  ->  dL/dF(h) only: what F's backward needs first
    read_backward   dL/dx', F(h), dL/dh  ->  dL/dx, dL/dH~, dL/dphi: the rest of both halves in one pass

The projection by phi (P = x phi^T) is a register-blocked loop of its own (BLAS reaches about half the machine's peak on
this thin shape, K = 2n + n^2 outputs per token), and so is its backward (dL/dx += dL/dP phi for each block of tokens,
dL/dphi += dL/dP^T x per chunk of them, while their rows are in cache). The per-token loops run on vectors of channels
with their sums in registers (expansion rates 2 to 4 are compiled for their n). Sinkhorn-Knopp runs on blocks of
tokens, vectorised across the tokens, in its scaling form; its backward rebuilds the iterates and walks back through
them. read_backward takes the tokens block by block through all of its steps, fetching the next block's rows from
memory while it computes (software prefetch, as the projection in read_forward and the streaming write kernels do),
and sums each vector of dL/dx in registers, storing it once past the caches. Vectors are whole registers: AVX-512
(16 floats) where torch reports that capability, AVX2 (8) otherwise.

Tokens are split over torch's intra-op threads (`at::parallel_for`). float32 and float64 (the latter for tests).
Nothing here runs at import: `load()` builds or loads the extension when a model first asks for it (see its docstring
for the cache and the build lock), unless the environment sets `HF_MODELS_MHC_KERNELS=0`.
"""

import threading

import torch
from transformers.utils import logging


logger = logging.get_logger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

using torch::Tensor;

// kBlock: lanes per vector (tokens per Sinkhorn-Knopp block, channels per step elsewhere), a whole vector register of
// floats: 16 with AVX-512 (built with -mavx512f where torch reports AVX512), 8 otherwise (AVX2's 256 bits). kWide:
// vectors of channels per register block in the projection loops, sized to the register file (32 vector registers
// with AVX-512, 16 with AVX2) so that their sums never spill.
#if defined(__AVX512F__)
constexpr int64_t kBlock = 16;
constexpr int64_t kWide = 4;
#else
constexpr int64_t kBlock = 8;
constexpr int64_t kWide = 2;
#endif
constexpr int64_t kMaxStreams = 16;  // expansion rates up to 16 (checked)
constexpr int64_t kPass = 64;        // tokens per run in read_forward (their streams stay in L2 between its passes)
// read_backward's chunks of tokens, whose streams stay in L2 until the chunk's dL/dphi pass: at most 256 KB of them
// and 128 tokens (float32 sums of dL/dphi over longer runs of tokens lose precision)
constexpr int64_t kChunkBytes = 256 * 1024;
constexpr int64_t kMaxChunk = 128;
constexpr int64_t kAheadBytes = 16 * 1024;  // how far ahead the streaming kernels fetch their input rows

// tokens to fetch ahead in a loop that streams rows of `bytes` per token
inline int64_t tokens_ahead(int64_t bytes) { return std::max<int64_t>(1, kAheadBytes / std::max<int64_t>(1, bytes)); }

// the gate alpha of coefficient k of 2n + n^2: alpha_pre, alpha_post, then alpha_res
inline int64_t gate_index(int64_t k, int64_t n) { return k < n ? 0 : (k < 2 * n ? 1 : 2); }

// Vectors of kBlock lanes (GCC/Clang vector extensions): channels in the per-token loops below, tokens in Sinkhorn.
template <typename T>
struct Lanes {
  typedef T type __attribute__((vector_size(kBlock * sizeof(T))));
};
template <typename T>
using Vec = typename Lanes<T>::type;

template <typename T>
inline Vec<T> splat(T value) {
  Vec<T> v;
  for (int64_t b = 0; b < kBlock; ++b) v[b] = value;
  return v;
}

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, const Vec<T>& v) { std::memcpy(p, &v, sizeof(v)); }

// A store past the caches (no read of the line before it is written over, and no eviction of rows still to be read):
// for an output written once that the next kernel reads from memory anyway. Aligned float vectors only, else `store`.
template <typename T>
inline void store_stream(T* p, const Vec<T>& v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    if ((reinterpret_cast<uintptr_t>(p) & 63) == 0) return _mm512_stream_ps(reinterpret_cast<float*>(p), (__m512)v);
  }
#elif defined(__AVX2__)
  if constexpr (sizeof(T) == 4) {
    if ((reinterpret_cast<uintptr_t>(p) & 31) == 0) return _mm256_stream_ps(reinterpret_cast<float*>(p), (__m256)v);
  }
#endif
  store(p, v);
}

// orders the streamed stores before whatever follows (another thread reading them after the parallel region)
inline void stream_fence() {
#if defined(__AVX2__)
  _mm_sfence();
#endif
}

// the sum of a vector's lanes by halves (each step one shuffle and one add)
template <typename T, int64_t N>
inline T tree_sum(const T* lanes) {
  if constexpr (N == 2) {
    return lanes[0] + lanes[1];
  } else {
    typedef T Half __attribute__((vector_size(N / 2 * sizeof(T))));
    Half low, high;
    std::memcpy(&low, lanes, sizeof(Half));
    std::memcpy(&high, lanes + N / 2, sizeof(Half));
    const Half sum = low + high;
    return tree_sum<T, N / 2>(reinterpret_cast<const T*>(&sum));
  }
}

template <typename T>
inline T lane_sum(const Vec<T>& v) { return tree_sum<T, kBlock>(reinterpret_cast<const T*>(&v)); }

// exp of every lane. float: x = k ln2 + r with k = round(x / ln2), |r| <= ln2 / 2, exp(r) by Cephes' degree-6
// polynomial (within 1 ulp of std::exp), times 2^k made in the exponent bits: ten times faster than a std::exp per
// lane. Below -87.3 (2^k would leave the normal range) it gives 0, as a float with denormals flushed would, and above
// 88.37 exp(88.37). double (for tests) takes std::exp lane by lane.
template <typename T>
inline Vec<T> vexp(Vec<T> x) {
  for (int64_t b = 0; b < kBlock; ++b) x[b] = std::exp(x[b]);
  return x;
}

template <>
inline Vec<float> vexp<float>(Vec<float> x) {
  typedef int32_t Bits __attribute__((vector_size(kBlock * sizeof(int32_t))));
  const Vec<float> low = splat(-87.33654f), high = splat(88.3762626f), shift = splat(12582912.0f);  // 1.5 * 2^23
  const auto under = x < low;
  x = x < low ? low : x;
  x = x > high ? high : x;
  const Vec<float> t = x * 1.44269504088896341f + shift;  // round(x / ln2) in the low mantissa bits of t
  const Vec<float> k = t - shift;
  Vec<float> r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;  // ln2 in two parts, so that r is exact
  Vec<float> p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const Bits power = ((Bits)t - (Bits)shift + 127) << 23;  // 2^k
  return under ? splat(0.0f) : p * (Vec<float>)power;
}

// out[k] = sigmoid(in[k]) = 1 / (1 + exp(-in[k])) for k < count, kBlock at a time
template <typename T>
inline void sigmoids(const T* in, int64_t count, T* out) {
  const Vec<T> one = splat(T(1));
  for (int64_t k = 0; k < count; k += kBlock) {
    const int64_t lanes = std::min(kBlock, count - k);
    Vec<T> v = splat(T(0));
    if (lanes == kBlock) {
      v = load(in + k);
    } else {
      for (int64_t b = 0; b < lanes; ++b) v[b] = in[k + b];
    }
    const Vec<T> s = one / (one + vexp<T>(-v));
    if (lanes == kBlock) {
      store(out + k, s);
    } else {
      for (int64_t b = 0; b < lanes; ++b) out[k + b] = s[b];
    }
  }
}

// Asks for the cache lines of [begin, end) to be brought into L2 ahead of their use: a loop working on one block of
// tokens pulls in the next block's rows this way, so that reading them from memory overlaps the arithmetic (the
// hardware prefetchers only follow the loads as they happen).
inline void prefetch(const void* begin, const void* end) {
  for (const char* p = static_cast<const char*>(begin); p < static_cast<const char*>(end); p += 64)
    __builtin_prefetch(p, 0, 2);
}

// <a, b> with four independent accumulators (a single one would wait on the latency of every add)
template <typename T>
inline T dot(const T* a, const T* b, int64_t size) {
  Vec<T> acc[4] = {splat(T(0)), splat(T(0)), splat(T(0)), splat(T(0))};
  int64_t c = 0;
  for (; c + 4 * kBlock <= size; c += 4 * kBlock)
    for (int64_t u = 0; u < 4; ++u) acc[u] += load(a + c + u * kBlock) * load(b + c + u * kBlock);
  for (; c + kBlock <= size; c += kBlock) acc[0] += load(a + c) * load(b + c);
  T s = lane_sum<T>((acc[0] + acc[1]) + (acc[2] + acc[3]));
  for (; c < size; ++c) s += a[c] * b[c];
  return s;
}

// out[r * nb + j] = <a_r, b_j> for a token's rows a_0..a_{na-1} and b_0..b_{nb-1} of length C (nb <= kMaxStreams + 1).
// Two rows of a against all of b per pass: 2 nb independent sums, and every load of a row of b serves two of them.
// NB > 0 fixes nb at compile time, so the sums stay in registers; NB = 0 takes nb at run time.
template <typename T, int64_t NB>
void dots_fixed(const T* const* a, int64_t na, const T* const* b, int64_t nb_at_run_time, int64_t C, T* out) {
  const int64_t nb = NB > 0 ? NB : nb_at_run_time, body = C - C % kBlock;
  Vec<T> acc[2][NB > 0 ? NB : kMaxStreams + 1];
  for (int64_t r = 0; r < na; r += 2) {
    const bool pair = r + 1 < na;
    for (int64_t j = 0; j < nb; ++j) acc[0][j] = acc[1][j] = splat(T(0));
    for (int64_t c = 0; c < body; c += kBlock) {
      const Vec<T> a0 = load(a[r] + c), a1 = pair ? load(a[r + 1] + c) : a0;
      for (int64_t j = 0; j < nb; ++j) {
        const Vec<T> bj = load(b[j] + c);
        acc[0][j] += a0 * bj;
        acc[1][j] += a1 * bj;
      }
    }
    for (int64_t q = 0; q < (pair ? 2 : 1); ++q)
      for (int64_t j = 0; j < nb; ++j) {
        T s = lane_sum<T>(acc[q][j]);
        for (int64_t c = body; c < C; ++c) s += a[r + q][c] * b[j][c];
        out[(r + q) * nb + j] = s;
      }
  }
}

template <typename T>
void dots(const T* const* a, int64_t na, const T* const* b, int64_t nb, int64_t C, T* out) {
  switch (nb) {  // expansion rates 1 to 4 need nb = n or n + 1
    case 1: return dots_fixed<T, 1>(a, na, b, nb, C, out);
    case 2: return dots_fixed<T, 2>(a, na, b, nb, C, out);
    case 3: return dots_fixed<T, 3>(a, na, b, nb, C, out);
    case 4: return dots_fixed<T, 4>(a, na, b, nb, C, out);
    case 5: return dots_fixed<T, 5>(a, na, b, nb, C, out);
    default: return dots_fixed<T, 0>(a, na, b, nb, C, out);
  }
}

// y_r = sum_j w[r * n + j] x_j (+ p_r o when o is given), r < rows, for a token's n rows x_j of C channels: per vector
// of channels the inputs are loaded once and every output is summed in a register and stored once. N > 0 fixes n at
// compile time (the inputs then stay in registers); N = 0 takes it at run time.
template <typename T, int64_t N>
void mix_fixed(T* y, const T* w, const T* x, int64_t rows, int64_t n_at_run_time, int64_t C, const T* p, const T* o) {
  const int64_t n = N > 0 ? N : n_at_run_time, body = C - C % kBlock;
  Vec<T> xv[N > 0 ? N : kMaxStreams];
  for (int64_t c = 0; c < body; c += kBlock) {
    for (int64_t j = 0; j < n; ++j) xv[j] = load(x + j * C + c);
    const Vec<T> ov = o ? load(o + c) : splat(T(0));
    for (int64_t r = 0; r < rows; ++r) {
      Vec<T> sum = o ? p[r] * ov : splat(T(0));
      for (int64_t j = 0; j < n; ++j) sum += w[r * n + j] * xv[j];
      store(y + r * C + c, sum);
    }
  }
  for (int64_t c = body; c < C; ++c)
    for (int64_t r = 0; r < rows; ++r) {
      T sum = o ? p[r] * o[c] : T(0);
      for (int64_t j = 0; j < n; ++j) sum += w[r * n + j] * x[j * C + c];
      y[r * C + c] = sum;
    }
}

template <typename T>
void mix(T* y, const T* w, const T* x, int64_t rows, int64_t n, int64_t C, const T* p = nullptr,
         const T* o = nullptr) {
  switch (n) {
    case 2: return mix_fixed<T, 2>(y, w, x, rows, n, C, p, o);
    case 3: return mix_fixed<T, 3>(y, w, x, rows, n, C, p, o);
    case 4: return mix_fixed<T, 4>(y, w, x, rows, n, C, p, o);
    default: return mix_fixed<T, 0>(y, w, x, rows, n, C, p, o);
  }
}

// out[t * K + k] = <x_t, phi_k> for `count` rows x_t and K rows phi_k, all of length D. Blocks of 4 tokens by 3 rows
// of phi (6 with AVX-512's 32 registers): 12 (24) sums in registers, 7 (10) loads per 12 (24) multiply-adds; the
// block's tokens stay in L1 while phi streams past. Meanwhile the next block's rows (of the `available` rows of x) are
// fetched, a slice per group of rows of phi.
template <typename T>
void project(const T* x, const T* phi, int64_t count, int64_t D, int64_t K, T* out, int64_t available) {
  constexpr int64_t kTokens = 4, kRows = kWide == 4 ? 6 : 3;
  const int64_t body = D - D % kBlock, groups = (K + kRows - 1) / kRows;
  const int64_t slice = (kTokens * D + groups - 1) / groups;
  for (int64_t t = 0; t < count; t += kTokens) {
    const int64_t tokens = std::min(kTokens, count - t);
    const T* xr[kTokens];
    for (int64_t q = 0; q < kTokens; ++q) xr[q] = x + (t + std::min(q, tokens - 1)) * D;  // a short block repeats
    for (int64_t k = 0; k < K; k += kRows) {
      const int64_t ahead = (t + kTokens) * D + k / kRows * slice;
      if (ahead < available * D) prefetch(x + ahead, x + std::min(ahead + slice, available * D));
      const int64_t rows = std::min(kRows, K - k);
      const T* pr[kRows];
      for (int64_t r = 0; r < kRows; ++r) pr[r] = phi + (k + std::min(r, rows - 1)) * D;
      Vec<T> acc[kTokens][kRows];
      for (int64_t q = 0; q < kTokens; ++q)
        for (int64_t r = 0; r < kRows; ++r) acc[q][r] = splat(T(0));
      for (int64_t c = 0; c < body; c += kBlock) {
        Vec<T> pv[kRows];
        for (int64_t r = 0; r < kRows; ++r) pv[r] = load(pr[r] + c);
        for (int64_t q = 0; q < kTokens; ++q) {
          const Vec<T> xv = load(xr[q] + c);
          for (int64_t r = 0; r < kRows; ++r) acc[q][r] += xv * pv[r];
        }
      }
      for (int64_t q = 0; q < tokens; ++q)
        for (int64_t r = 0; r < rows; ++r) {
          T sum = lane_sum<T>(acc[q][r]);
          for (int64_t c = body; c < D; ++c) sum += xr[q][c] * pr[r][c];
          out[(t + q) * K + k + r] = sum;
        }
    }
  }
}

// The backward of the projection, P = x phi^T, as two register-blocked loops: dL/dx += dL/dP phi is summed in
// registers with the other terms of dL/dx (BLAS calls per chunk added it to dL/dx in memory, one more pass over the
// chunk's rows), and dL/dphi += dL/dP^T x runs while the chunk's rows are in cache.

// dL/dx of a block of tokens, each vector of it summed in registers and stored once:
//   dx_j = sum_i H_res[i, j] grad_i + H_pre[j] dL/dh + s x_j + sum_k dL/dP_k phi_k[jC, jC + C)
// (the update's backward through H_res, the collapse's through H_pre, the RMS norm's (s), the projection's). Per token
// q of the Q: rows grad (n C; null when x' got no gradient), gh (C), x (n C), and rt = H_res^T (n x n), pre (n),
// scale (s), dp (K). Q tokens by V vectors of channels c.. of stream j: the rows of phi stream past once for Q tokens.
template <typename T>
struct DxRows {
  T* dx;
  const T* grad;
  const T* gh;
  const T* x;
  const T* rt;
  const T* pre;
  T scale;
  const T* dp;
};

template <typename T, int64_t Q, int64_t V>
inline void dx_vectors(const DxRows<T>* rows, const T* phi, int64_t n, int64_t C, int64_t K, int64_t j, int64_t c) {
  const int64_t D = n * C, at = j * C + c;
  Vec<T> acc[Q][V];
  for (int64_t q = 0; q < Q; ++q) {
    const DxRows<T>& r = rows[q];
    for (int64_t v = 0; v < V; ++v) {
      const int64_t offset = c + v * kBlock;
      Vec<T> sum = r.scale * load(r.x + j * C + offset) + r.pre[j] * load(r.gh + offset);
      if (r.grad)
        for (int64_t i = 0; i < n; ++i) sum += r.rt[j * n + i] * load(r.grad + i * C + offset);
      acc[q][v] = sum;
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> p[V];
    for (int64_t v = 0; v < V; ++v) p[v] = load(phi + k * D + at + v * kBlock);
    for (int64_t q = 0; q < Q; ++q) {
      const T w = rows[q].dp[k];
      for (int64_t v = 0; v < V; ++v) acc[q][v] += w * p[v];
    }
  }
  for (int64_t q = 0; q < Q; ++q)
    for (int64_t v = 0; v < V; ++v) store_stream(rows[q].dx + at + v * kBlock, acc[q][v]);
}

template <typename T, int64_t Q>
void dx_tokens(const DxRows<T>* rows, const T* phi, int64_t n, int64_t C, int64_t K) {
  const int64_t D = n * C;
  for (int64_t j = 0; j < n; ++j) {
    int64_t c = 0;
    for (; c + kWide * kBlock <= C; c += kWide * kBlock) dx_vectors<T, Q, kWide>(rows, phi, n, C, K, j, c);
    for (; c + kBlock <= C; c += kBlock) dx_vectors<T, Q, 1>(rows, phi, n, C, K, j, c);
    for (; c < C; ++c)
      for (int64_t q = 0; q < Q; ++q) {
        const DxRows<T>& r = rows[q];
        T sum = r.scale * r.x[j * C + c] + r.pre[j] * r.gh[c];
        if (r.grad)
          for (int64_t i = 0; i < n; ++i) sum += r.rt[j * n + i] * r.grad[i * C + c];
        for (int64_t k = 0; k < K; ++k) sum += r.dp[k] * phi[k * D + j * C + c];
        r.dx[j * C + c] = sum;
      }
  }
}

template <typename T>
void dx_block(const DxRows<T>* rows, int64_t count, const T* phi, int64_t n, int64_t C, int64_t K) {
  int64_t t = 0;
  for (; t + 4 <= count; t += 4) dx_tokens<T, 4>(rows + t, phi, n, C, K);
  for (; t < count; ++t) dx_tokens<T, 1>(rows + t, phi, n, C, K);
}

// g_k += sum_t w[t * K + k] x_t for R rows g_k .. (stride D), channels c..c + V kBlock, over `count` rows x_t:
// R V sums in registers while the tokens' rows stream past.
template <typename T, int64_t R, int64_t V>
inline void add_outer_block(T* g, const T* w, const T* x, int64_t count, int64_t D, int64_t K, int64_t c) {
  Vec<T> acc[R][V];  // this chunk's sums start at zero (added to g at the end), which keeps float32's rounding low
  for (int64_t r = 0; r < R; ++r)
    for (int64_t v = 0; v < V; ++v) acc[r][v] = splat(T(0));
  for (int64_t t = 0; t < count; ++t) {
    Vec<T> xv[V];
    for (int64_t v = 0; v < V; ++v) xv[v] = load(x + t * D + c + v * kBlock);
    for (int64_t r = 0; r < R; ++r) {
      const T s = w[t * K + r];
      for (int64_t v = 0; v < V; ++v) acc[r][v] += s * xv[v];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t v = 0; v < V; ++v) store(g + r * D + c + v * kBlock, load(g + r * D + c + v * kBlock) + acc[r][v]);
}

template <typename T, int64_t R>
void add_outer_rows(T* g, const T* w, const T* x, int64_t count, int64_t D, int64_t K) {
  int64_t c = 0;
  for (; c + kWide * kBlock <= D; c += kWide * kBlock) add_outer_block<T, R, kWide>(g, w, x, count, D, K, c);
  for (; c + kBlock <= D; c += kBlock) add_outer_block<T, R, 1>(g, w, x, count, D, K, c);
  for (; c < D; ++c)
    for (int64_t r = 0; r < R; ++r) {
      T sum = 0;
      for (int64_t t = 0; t < count; ++t) sum += w[t * K + r] * x[t * D + c];
      g[r * D + c] += sum;
    }
}

// g_k += sum_t w[t * K + k] x_t for the K rows g_k and `count` rows x_t: dL/dphi += dL/dP^T x, 6 rows of g at a time
template <typename T>
void add_outer(T* g, const T* w, const T* x, int64_t count, int64_t D, int64_t K) {
  int64_t k = 0;
  for (; k + 6 <= K; k += 6) add_outer_rows<T, 6>(g + k * D, w + k, x, count, D, K);
  for (; k + 2 <= K; k += 2) add_outer_rows<T, 2>(g + k * D, w + k, x, count, D, K);
  for (; k < K; ++k) add_outer_rows<T, 1>(g + k * D, w + k, x, count, D, K);
}

// Sinkhorn-Knopp on a block of kBlock tokens at once: every entry of the n x n matrices is a vector over the block's
// tokens (GCC/Clang vector extensions), so each step is a few SIMD instructions (the matrices alone are too small to
// vectorise). It runs in the scaling form: with E = exp(z - max), the t-th iterate is diag(u_t) E diag(v_t), where
// the column step is v_t = 1 / (E^T u_{t-1}) and the row step u_t = 1 / (E v_t), u_0 = 1: the same sequence of
// matrices as dividing the columns, then the rows of the matrix by their sums, with 2n divisions and 2n^2
// multiply-adds per iteration instead of 2n^2 of each.

// E = exp(z - max) (n*n vectors) and the scalings: scale [iterations + 1][2n] holds (v_t, u_t), (1, 1) at t = 0.
template <typename T>
void sinkhorn_scalings(const Vec<T>* z, Vec<T>* e, Vec<T>* scale, int64_t n, int64_t iterations) {
  const Vec<T> tiny = splat(std::numeric_limits<T>::min()), one = splat(T(1));
  Vec<T> top = z[0];
  for (int64_t k = 1; k < n * n; ++k) top = z[k] > top ? z[k] : top;
  for (int64_t k = 0; k < n * n; ++k) e[k] = vexp<T>(z[k] - top);
  for (int64_t k = 0; k < 2 * n; ++k) scale[k] = one;
  for (int64_t t = 1; t <= iterations; ++t) {
    const Vec<T>* u_last = scale + (2 * t - 1) * n;
    Vec<T>* v = scale + 2 * t * n;
    Vec<T>* u = v + n;
    for (int64_t j = 0; j < n; ++j) {  // columns: v_j = 1 / sum_i E_ij u_i
      Vec<T> sum = e[j] * u_last[0];
      for (int64_t i = 1; i < n; ++i) sum += e[i * n + j] * u_last[i];
      v[j] = one / (sum > tiny ? sum : tiny);
    }
    for (int64_t i = 0; i < n; ++i) {  // rows: u_i = 1 / sum_j E_ij v_j
      Vec<T> sum = e[i * n] * v[0];
      for (int64_t j = 1; j < n; ++j) sum += e[i * n + j] * v[j];
      u[i] = one / (sum > tiny ? sum : tiny);
    }
  }
}

// z (n*n vectors) -> m = Sinkhorn(exp(z)) = diag(u) E diag(v); e and scale are work space as above.
template <typename T>
void sinkhorn_forward(const Vec<T>* z, Vec<T>* m, Vec<T>* e, Vec<T>* scale, int64_t n, int64_t iterations) {
  sinkhorn_scalings<T>(z, e, scale, n, iterations);
  const Vec<T>* v = scale + 2 * iterations * n;
  const Vec<T>* u = v + n;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) m[i * n + j] = u[i] * e[i * n + j] * v[j];
}

// g (n*n vectors): dL/dm on entry, dL/dz on exit. Rebuilds E and the scalings, then walks the iterations back:
// through u_t = 1/a (a = E v_t): da = -du u_t^2, dE += da v_t^T, dv_t = E^T da; through v_t = 1/b (b = E^T u_{t-1}):
// db = -dv v_t^2, dE += u_{t-1} db^T, du_{t-1} = E db; finally through E = exp(z - max): dz = dE E.
template <typename T>
void sinkhorn_backward(const Vec<T>* z, Vec<T>* g, Vec<T>* e, Vec<T>* scale, Vec<T>* de, int64_t n,
                       int64_t iterations) {
  sinkhorn_scalings<T>(z, e, scale, n, iterations);
  Vec<T> du[kMaxStreams], dv[kMaxStreams], d[kMaxStreams];
  const Vec<T> zero = splat(T(0));
  {  // m_ij = u_i E_ij v_j
    const Vec<T>* v = scale + 2 * iterations * n;
    const Vec<T>* u = v + n;
    for (int64_t k = 0; k < n; ++k) du[k] = dv[k] = zero;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const int64_t k = i * n + j;
        const Vec<T> ge = g[k] * e[k];
        de[k] = g[k] * u[i] * v[j];
        du[i] += ge * v[j];
        dv[j] += ge * u[i];
      }
  }
  for (int64_t t = iterations; t >= 1; --t) {
    const Vec<T>* v = scale + 2 * t * n;
    const Vec<T>* u = v + n;
    const Vec<T>* u_last = v - n;
    for (int64_t i = 0; i < n; ++i) d[i] = -du[i] * u[i] * u[i];  // da
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        de[i * n + j] += d[i] * v[j];
        dv[j] += e[i * n + j] * d[i];
      }
    for (int64_t j = 0; j < n; ++j) d[j] = -dv[j] * v[j] * v[j];  // db
    for (int64_t i = 0; i < n; ++i) du[i] = zero;
    for (int64_t j = 0; j < n; ++j) dv[j] = zero;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        de[i * n + j] += u_last[i] * d[j];
        du[i] += e[i * n + j] * d[j];
      }
  }
  for (int64_t k = 0; k < n * n; ++k) g[k] = de[k] * e[k];
}

// entries offset..offset+width of `count` rows of `source` (row stride `stride`) -> width vectors, zero-padded
template <typename T>
void gather(const T* source, int64_t stride, int64_t offset, int64_t width, int64_t count, Vec<T>* block) {
  for (int64_t k = 0; k < width; ++k)
    for (int64_t b = 0; b < kBlock; ++b) block[k][b] = b < count ? source[b * stride + offset + k] : T(0);
}

template <typename T>
void scatter(const Vec<T>* block, int64_t stride, int64_t offset, int64_t width, int64_t count, T* target) {
  for (int64_t b = 0; b < count; ++b)
    for (int64_t k = 0; k < width; ++k) target[b * stride + offset + k] = block[k][b];
}

inline int64_t grain(int64_t per_token) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, per_token)); }

void check(const Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions, got ", t.dim());
}

}  // namespace

// x (M, n, C), phi (K, nC), bias (K), gate (3) -> h (M, C), post (M, n), res (M, n, n), and for the backward
// proj = x phi^T (M, K), tilde (M, K), inv_rms (M)
std::vector<Tensor> read_forward(Tensor x, Tensor phi, Tensor bias, Tensor gate, int64_t iterations, double eps) {
  check(x, "x", 3);
  check(phi, "phi", 2);
  const int64_t M = x.size(0), n = x.size(1), C = x.size(2), K = 2 * n + n * n, D = n * C;
  TORCH_CHECK(phi.size(0) == K && phi.size(1) == D, "phi must be (2n + n^2, n C)");
  TORCH_CHECK(n <= kMaxStreams, "at most ", kMaxStreams, " streams");
  auto h = torch::empty({M, C}, x.options());
  auto post = torch::empty({M, n}, x.options());
  auto res = torch::empty({M, n, n}, x.options());
  auto proj = torch::empty({M, K}, x.options());
  auto tilde = torch::empty({M, K}, x.options());
  auto inv = torch::empty({M}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mhc_read_forward", [&] {
    using T = scalar_t;
    const T* X = x.data_ptr<T>();
    const T* PH = phi.data_ptr<T>();
    T* P = proj.data_ptr<T>();
    auto b = bias.contiguous().to(x.scalar_type());
    auto g = gate.contiguous().to(x.scalar_type());
    const T* B = b.data_ptr<T>();
    const T* G = g.data_ptr<T>();
    T* Hh = h.data_ptr<T>();
    T* Po = post.data_ptr<T>();
    T* R = res.data_ptr<T>();
    T* Ti = tilde.data_ptr<T>();
    T* I = inv.data_ptr<T>();
    at::parallel_for(0, M, grain(D), [&](int64_t begin, int64_t end) {
      std::vector<T> pre(n), sig(2 * n);
      std::vector<Vec<T>> z(n * n), m(n * n), e(n * n), scale(2 * n * (iterations + 1));
      for (int64_t first = begin; first < end; first += kPass) {
        const int64_t last = std::min(end, first + kPass);
        // P = x phi^T for this run of tokens, while its streams are in cache for the pass below
        project(X + first * D, PH, last - first, D, K, P + first * K, end - first);
        for (int64_t t = first; t < last; ++t) {
          const T* xs = X + t * D;
          T* tl = Ti + t * K;
          const T inv_rms = T(1) / std::sqrt(dot(xs, xs, D) / T(D) + T(eps));
          I[t] = inv_rms;
          for (int64_t k = 0; k < K; ++k) tl[k] = P[t * K + k] * inv_rms * G[gate_index(k, n)] + B[k];
          sigmoids(tl, 2 * n, sig.data());
          for (int64_t i = 0; i < n; ++i) {
            pre[i] = sig[i];
            Po[t * n + i] = T(2) * sig[n + i];
          }
          T* ht = Hh + t * C;
          mix(ht, pre.data(), xs, 1, n, C);
        }
        for (int64_t t = first; t < last; t += kBlock) {  // H_res, kBlock tokens at a time
          const int64_t count = std::min(kBlock, last - t);
          gather<T>(Ti + t * K, K, 2 * n, n * n, count, z.data());
          sinkhorn_forward<T>(z.data(), m.data(), e.data(), scale.data(), n, iterations);
          scatter<T>(m.data(), n * n, 0, n * n, count, R + t * n * n);
        }
      }
    });
  });
  return {h, post, res, proj, tilde, inv};
}

// x (M, n, C), res (M, n, n), post (M, n), out (M, C) -> x' (M, n, C)
Tensor write_forward(Tensor x, Tensor res, Tensor post, Tensor out) {
  check(x, "x", 3);
  check(res, "res", 3);
  check(post, "post", 2);
  check(out, "out", 2);
  const int64_t M = x.size(0), n = x.size(1), C = x.size(2), D = n * C;
  auto y = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mhc_write_forward", [&] {
    using T = scalar_t;
    const T* X = x.data_ptr<T>();
    const T* R = res.data_ptr<T>();
    const T* Po = post.data_ptr<T>();
    const T* O = out.data_ptr<T>();
    T* Y = y.data_ptr<T>();
    const int64_t ahead = tokens_ahead(D * int64_t(sizeof(T)));
    at::parallel_for(0, M, grain(D), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if (t + ahead < end) {  // a streaming loop: the rows some 16 KB ahead are asked for now
          prefetch(X + (t + ahead) * D, X + (t + ahead + 1) * D);
          prefetch(O + (t + ahead) * C, O + (t + ahead + 1) * C);
        }
        const T* xs = X + t * D;
        const T* o = O + t * C;
        const T* r = R + t * n * n;
        mix(Y + t * D, r, xs, n, n, C, Po + t * n, o);
      }
    });
  });
  return y;
}

// grad (M, n, C) = dL/dx', post (M, n) -> dout = dL/dF(h) = sum_i H_post[i] grad_i (M, C): the one gradient the layer
// F needs before its own backward. The rest of the stream update's backward waits for read_backward, which then has
// dL/dh as well and does everything in one pass over the tokens.
Tensor write_backward(Tensor grad, Tensor post) {
  check(grad, "grad", 3);
  check(post, "post", 2);
  const int64_t M = grad.size(0), n = grad.size(1), C = grad.size(2), D = n * C;
  auto dout = torch::empty({M, C}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "mhc_write_backward", [&] {
    using T = scalar_t;
    const T* Gr = grad.data_ptr<T>();
    const T* Po = post.data_ptr<T>();
    T* DO = dout.data_ptr<T>();
    const int64_t ahead = tokens_ahead(D * int64_t(sizeof(T)));
    at::parallel_for(0, M, grain(D), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if (t + ahead < end) prefetch(Gr + (t + ahead) * D, Gr + (t + ahead + 1) * D);
        mix(DO + t * C, Po + t * n, Gr + t * D, 1, n, C);
      }
    });
  });
  return dout;
}

// The backward of a whole hyper-connection but dL/dF(h):
//   grad (M, n, C) = dL/dx' (an empty tensor when x' got no gradient), out (M, C) = F(h), gh (M, C) = dL/dh,
//   gpost (M, n), gres (M, n, n): gradients H_post and H_res received from elsewhere (zeros when only the update
//   used them); x, phi, res, proj, tilde, inv_rms from read_forward; gate (3)
// -> dx (M, n, C), dtilde = dL/dH~ (M, K), dphi (K, nC).
// Per block of tokens: the coefficient gradients dL/dH_res[i, j] = <grad_i, x_j>, dL/dH_post[i] = <grad_i, F(h)>,
// dL/dH_pre[i] = <dL/dh, x_i> (fetching the next block's rows meanwhile); Sinkhorn's backward; the sigmoids' and the
// RMS norm's; then dx (`dx_block`: every term of it in registers, stored once). Per chunk of blocks, while its rows are
// in cache: dL/dphi += dL/dP^T x.
std::vector<Tensor> read_backward(Tensor grad, Tensor out, Tensor gh, Tensor gpost, Tensor gres, Tensor x, Tensor phi,
                                  Tensor res, Tensor proj, Tensor tilde, Tensor inv, Tensor gate, int64_t iterations) {
  check(x, "x", 3);
  check(gh, "gh", 2);
  check(gpost, "gpost", 2);
  check(gres, "gres", 3);
  check(phi, "phi", 2);
  check(res, "res", 3);
  const bool has_grad = grad.defined() && grad.numel() > 0;
  if (has_grad) {
    check(grad, "grad", 3);
    check(out, "out", 2);
  }
  const int64_t M = x.size(0), n = x.size(1), C = x.size(2), K = 2 * n + n * n, D = n * C;
  TORCH_CHECK(n <= kMaxStreams, "at most ", kMaxStreams, " streams");
  auto dx = torch::empty_like(x);
  auto dtilde = torch::empty({M, K}, x.options());
  auto dphi = torch::zeros({K, D}, x.options());
  std::mutex dphi_lock;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mhc_read_backward", [&] {
    using T = scalar_t;
    const T* Gr = has_grad ? grad.data_ptr<T>() : nullptr;
    const T* O = has_grad ? out.data_ptr<T>() : nullptr;
    const T* GH = gh.data_ptr<T>();
    const T* GP = gpost.data_ptr<T>();
    const T* GR = gres.data_ptr<T>();
    const T* X = x.data_ptr<T>();
    const T* PH = phi.data_ptr<T>();
    const T* R = res.data_ptr<T>();
    const T* P = proj.data_ptr<T>();
    const T* Ti = tilde.data_ptr<T>();
    const T* I = inv.data_ptr<T>();
    auto g = gate.contiguous().to(x.scalar_type());
    const T* Ga = g.data_ptr<T>();
    T* DX = dx.data_ptr<T>();
    T* DT = dtilde.data_ptr<T>();
    T* DPHI = dphi.data_ptr<T>();
    // tokens per chunk: whole Sinkhorn blocks
    const int64_t fit = std::max<int64_t>(1, kChunkBytes / (D * int64_t(sizeof(T))) / kBlock) * kBlock;
    const int64_t chunk = std::min<int64_t>(fit, kMaxChunk);
    at::parallel_for(0, M, grain(D), [&](int64_t begin, int64_t end) {
      std::vector<T> pre(n), sig(2 * n), products((n + 1) * (n + 1)), dphi_part(K * D, T(0));
      std::vector<T> transposed(kBlock * n * n), pres(kBlock * n);  // per token of a block
      std::vector<DxRows<T>> rows(kBlock);
      std::vector<T> dproj(chunk * K);  // dL/dP of the chunk's tokens
      std::vector<const T*> rows_a(n + 1), rows_b(n + 1);
      std::vector<Vec<T>> z(n * n), gz(n * n), e(n * n), de(n * n), scale(2 * n * (iterations + 1));
      for (int64_t first = begin; first < end; first += chunk) {
        const int64_t last = std::min(end, first + chunk);
        T* DP = dproj.data();  // DP[(t - first) * K + k]
        // one block of kBlock tokens at a time through every step, so that its rows stay in L1/L2 from the first
        // read to the last
        for (int64_t block = first; block < last; block += kBlock) {
          const int64_t stop = std::min(last, block + kBlock);
          for (int64_t t = block; t < stop; ++t) {  // gradients of H_pre, H_post, H_res (kept in dtilde's rows)
            if (t + kBlock < end) {  // the next block's rows arrive while this one is computed
              const int64_t ahead = t + kBlock;
              prefetch(X + ahead * D, X + (ahead + 1) * D);
              prefetch(GH + ahead * C, GH + (ahead + 1) * C);
              if (has_grad) {
                prefetch(Gr + ahead * D, Gr + (ahead + 1) * D);
                prefetch(O + ahead * C, O + (ahead + 1) * C);
              }
            }
            const T* xs = X + t * D;
            T* dt = DT + t * K;
            // rows a = grad_0..grad_{n-1}, dL/dh; b = x_0..x_{n-1}, F(h): <grad_i, x_j> = dH_res[i, j],
            // <grad_i, F(h)> = dH_post[i], <dL/dh, x_j> = dH_pre[j]
            for (int64_t i = 0; i < n; ++i) {
              rows_a[i] = has_grad ? Gr + t * D + i * C : nullptr;
              rows_b[i] = xs + i * C;
            }
            rows_a[n] = GH + t * C;
            rows_b[n] = has_grad ? O + t * C : xs;
            if (has_grad) {
              dots(rows_a.data(), n + 1, rows_b.data(), n + 1, C, products.data());
            } else {
              dots(rows_a.data() + n, 1, rows_b.data(), n, C, products.data() + n * (n + 1));
            }
            for (int64_t i = 0; i < n; ++i) {
              dt[i] = products[n * (n + 1) + i];
              dt[n + i] = GP[t * n + i] + (has_grad ? products[i * (n + 1) + n] : T(0));
              for (int64_t j = 0; j < n; ++j)
                dt[2 * n + i * n + j] = GR[t * n * n + i * n + j] + (has_grad ? products[i * (n + 1) + j] : T(0));
            }
          }
          {  // through Sinkhorn-Knopp: rebuild the iterates, walk back
            const int64_t count = stop - block;
            gather<T>(Ti + block * K, K, 2 * n, n * n, count, z.data());
            gather<T>(DT + block * K, K, 2 * n, n * n, count, gz.data());
            sinkhorn_backward<T>(z.data(), gz.data(), e.data(), scale.data(), de.data(), n, iterations);
            scatter<T>(gz.data(), K, 2 * n, n * n, count, DT + block * K);
          }
          for (int64_t t = block; t < stop; ++t) {
            const T* xs = X + t * D;
            const T* ght = GH + t * C;
            const T* tl = Ti + t * K;
            const T* r = R + t * n * n;
            T* dt = DT + t * K;
            const T inv_rms = I[t];
            sigmoids(tl, 2 * n, sig.data());
            for (int64_t i = 0; i < n; ++i) {  // through the sigmoids
              const T s_pre = sig[i], s_post = sig[n + i];
              pre[i] = s_pre;
              dt[i] *= s_pre * (T(1) - s_pre);
              dt[n + i] *= T(2) * s_post * (T(1) - s_post);
            }
            T d_inv = 0;  // tilde_k = proj_k * inv_rms * gate(k) + bias_k
            for (int64_t k = 0; k < K; ++k) {
              const T gk = Ga[gate_index(k, n)];
              DP[(t - first) * K + k] = dt[k] * inv_rms * gk;
              d_inv += dt[k] * P[t * K + k] * gk;
            }
            // inv_rms = (|x|^2 / D + eps)^(-1/2): d|x|^2 = -d_inv inv^3 / 2D, and d|x|^2 / dx = 2x
            const int64_t b = t - block;
            T* rt = transposed.data() + b * n * n;  // H_res^T
            for (int64_t i = 0; i < n; ++i)
              for (int64_t j = 0; j < n; ++j) rt[j * n + i] = r[i * n + j];
            std::copy(pre.begin(), pre.end(), pres.begin() + b * n);
            rows[b] = {DX + t * D, has_grad ? Gr + t * D : nullptr, ght, xs, rt, pres.data() + b * n,
                       -d_inv * inv_rms * inv_rms * inv_rms / T(D), DP + (t - first) * K};
          }
          dx_block(rows.data(), stop - block, PH, n, C, K);
        }
        add_outer(dphi_part.data(), DP, X + first * D, last - first, D, K);  // dphi += dP^T x
      }
      stream_fence();
      std::lock_guard<std::mutex> guard(dphi_lock);
      for (int64_t k = 0; k < K * D; ++k) DPHI[k] += dphi_part[k];
    });
  });
  return {dx, dtilde, dphi};
}
"""

_FUNCTIONS = ["read_forward", "write_forward", "write_backward", "read_backward"]
MAX_STREAMS = 16  # kMaxStreams in the C++ source
SWITCH = "HF_MODELS_MHC_KERNELS"  # "0" turns the kernels off (read once, by the first load())
BUILD_LOCK_TIMEOUT = 600.0  # seconds to wait for another process's build before running the PyTorch ops
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")
_STATE = {}
_LOCK = threading.Lock()


def _flags():
    """Compiler flags: OpenMP (at::parallel_for is OpenMP in torch's CPU builds), -O3, and vector code for the CPU
    torch runs on: AVX2/FMA, or AVX-512 (F, BW, DQ, VL: what torch's AVX512 capability requires) with 512-bit vectors
    where torch reports AVX512, so that the kernels use the same vector width as the model's own matmuls (the build's
    name carries the capability, so a cache shared between machines never mixes them; `ATEN_CPU_CAPABILITY=avx2`
    gives the AVX2 build on an AVX-512 CPU)."""
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-Wno-psabi"]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    if capability == "AVX512":
        flags += ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mprefer-vector-width=512"]
    return flags, capability.lower()


def extension_name():
    """The build's name and compiler flags. The name is its cache key: the CPU capability, the torch version (an
    extension compiled against one libtorch may not load into another) and a digest of the source, the flags, the
    torch version and the Python ABI (a `TORCH_EXTENSIONS_DIR` shared between Pythons)."""
    import hashlib
    import re
    import sys

    flags, capability = _flags()
    key = "\n".join([_SOURCE, " ".join(flags), torch.__version__, sys.implementation.cache_tag or ""])
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    version = re.sub(r"[^0-9A-Za-z]+", "_", torch.__version__).strip("_")  # 2.13.0+cpu -> 2_13_0_cpu
    return f"hfm_mhc_cpu_{capability}_torch{version}_{digest}", flags


def load():
    """The compiled kernels as a Python module, built on the first call in a process (or loaded from the build
    cache); None when they are switched off (`HF_MODELS_MHC_KERNELS=0`, see `disabled_by()`) or cannot be built (no
    C++ compiler, a build error, another process building for over `BUILD_LOCK_TIMEOUT` seconds), with the reason in
    `load_error()`. Every hyper-connection asks for them on every training step: once settled, that is one
    dictionary lookup.

    The cache is torch's extensions folder (`TORCH_EXTENSIONS_DIR`, by default ~/.cache/torch_extensions/<python>_cpu)
    and holds `<extension_name()>/<name>.so`, put there by an atomic rename once a build is complete, so a cached
    load only imports it (a read-only cache with a finished build works too). A build runs in a fresh folder of its
    own under an OS file lock (`build.lock`), which the OS releases however its owner ends: a process killed while
    building never leaves a lock that makes the next one wait (torch's own `lock` file would, forever), and the next
    build removes what it left. A cache folder that cannot be created or written: the build runs in a temporary
    folder, once per process."""
    if "module" in _STATE:
        return _STATE["module"]
    with _LOCK:
        if "module" not in _STATE:
            import os

            switch = os.environ.get(SWITCH, "")
            if switch.strip().lower() in _OFF:
                _STATE.update(module=None, error=None, disabled=f"{SWITCH}={switch}")
            elif switch.strip().lower() not in _ON:
                raise ValueError(
                    f"{SWITCH}={switch!r} is invalid: use 0 to run the mHC hyper-connections on PyTorch ops, or 1 "
                    "(or leave it unset) for the fused CPU kernels"
                )
            else:
                try:
                    module = _load_or_build()
                    _STATE.update(module=module, error=None, disabled=None)
                except Exception as error:  # a missing compiler, ninja or setuptools: the eager path takes over
                    _STATE.update(module=None, error=_describe(error), disabled=None)
        return _STATE["module"]


def load_error(full=False):
    """Why `load()` returned None (None when it succeeded, was switched off or has not run): its first line, or with
    `full` the whole message (a failed build's compiler output)."""
    error = _STATE.get("error")
    if error is None or full:
        return error
    first = error.strip().splitlines()[0]
    return first if len(first) <= 300 else first[:300] + " ..."


def _describe(error):
    """`load_error()`'s text for `error`. torch's "Error building extension" starts with the compile command, so a
    failed build gets a first line with the compiler's own complaint ("c++: not found", "main.cpp:12: error: ...")
    above the whole output."""
    import re

    text = f"{type(error).__name__}: {error}"
    lines = text.strip().splitlines()
    if "Error building extension" in lines[0]:
        for line in lines[1:]:
            line = line.strip()
            if re.search(r"error|not found|no such file|cannot|denied", line, re.IGNORECASE) and not line.startswith(
                ("[", "ninja:")
            ):
                return f"{type(error).__name__}: the build failed: {line}\n{text}"
    return text


def disabled_by():
    """The setting that switched the kernels off (`"HF_MODELS_MHC_KERNELS=0"`), or None."""
    return _STATE.get("disabled")


def _load_or_build():
    """`load()`'s work: the cached build if there is one, else a build (cached where the cache can be written)."""
    import os
    import shutil
    import tempfile
    import time

    from torch.utils import cpp_extension  # needs setuptools; a build needs ninja and a C++ compiler

    name, flags = extension_name()
    cache, unusable = _cache_folder(cpp_extension, name)
    library = os.path.join(cache, name + cpp_extension.LIB_EXT) if cache else None
    broken = None
    if library and os.path.exists(library):
        try:
            return _import_library(name, library)
        except (ImportError, OSError) as error:  # a damaged file: rebuilt below
            broken = f"{type(error).__name__}: {error}"
    if cache is not None:
        unusable = _not_writable(cache)
        cache = None if unusable else cache
    if cache is None:
        return _build_privately(cpp_extension, name, flags, unusable)
    try:
        release = _acquire(os.path.join(cache, "build.lock"), cache)
    except TimeoutError:
        raise
    except OSError as error:  # e.g. ENOLCK: a network file system without locks
        return _build_privately(
            cpp_extension, name, flags, f"the build cache folder cannot be locked ({type(error).__name__}: {error})"
        )
    try:
        if broken is None and os.path.exists(library):  # another process built it while this one waited
            return _import_library(name, library)
        notes = []
        if broken:
            notes.append(f"the cached build did not load ({broken}) and is replaced")
        if release is not None:  # under the lock every earlier build folder is an unfinished one of a dead process
            leftovers = [
                entry.path
                for entry in os.scandir(cache)
                if entry.name.startswith("build-") or entry.name.endswith(".tmp")
            ]
            for path in leftovers:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.exists(path):
                    os.remove(path)
            if leftovers:
                notes.append("an earlier build was interrupted (its process ended) and is discarded")
        logger.warning(
            f"mHC: building the fused CPU kernels (first use; about a minute; cached in {cache})"
            + "".join(f"; {note}" for note in notes)
        )
        start = time.monotonic()
        staging = tempfile.mkdtemp(prefix="build-", dir=cache)
        try:
            module = _build(cpp_extension, name, flags, staging)
            built = getattr(module, "__file__", None)
            # a second build in one process is renamed <name>_v1 by torch: it works, but is not the cached name
            if getattr(module, "__name__", None) == name and built and os.path.exists(built):
                partial = f"{library}.{os.getpid()}.tmp"
                shutil.copy(built, partial)
                os.replace(partial, library)  # atomic: a reader sees no file or a complete one
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info(f"mHC: built the fused CPU kernels in {time.monotonic() - start:.0f} s")
        return module
    finally:
        if release is not None:
            release()


def _build_privately(cpp_extension, name, flags, why):
    """A build in a temporary folder, removed once the library is loaded, when the cache cannot be used (`why`)."""
    import shutil
    import tempfile

    logger.warning(
        f"mHC: building the fused CPU kernels in a temporary folder, for this process only (about a minute): {why}. "
        "Set TORCH_EXTENSIONS_DIR to a writable folder to keep the build."
    )
    staging = tempfile.mkdtemp(prefix=f"{name}_")
    try:
        return _build(cpp_extension, name, flags, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cache_folder(cpp_extension, name):
    """(the cache folder for `name`, None), created if missing, or (None, why) when it cannot be created. The folder
    is torch's own choice (`TORCH_EXTENSIONS_DIR` or its default), asked through its helper so that this module
    reads no environment variable but its own switch."""
    import os

    try:
        get_folder = getattr(cpp_extension, "_get_build_directory", None)
        if get_folder is not None:
            return get_folder(name, False), None
        folder = os.path.join(cpp_extension.get_default_build_root(), name)  # a torch without the helper
        os.makedirs(folder, exist_ok=True)
        return folder, None
    except OSError as error:
        return None, f"the build cache folder cannot be created ({type(error).__name__}: {error})"


def _not_writable(folder):
    """Why a build cannot be cached in `folder`, or None when it can. A real write, not only `os.access`: root passes
    access checks on folders without write permission, while a read-only mount refuses even root."""
    import os

    probe = os.path.join(folder, f".probe-{os.getpid()}")
    try:
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"no write permission on {folder}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        return f"the build cache folder is not writable ({type(error).__name__}: {error})"
    return None


def _acquire(path, cache):
    """Takes the build lock at `path` (waiting up to `BUILD_LOCK_TIMEOUT` seconds while another process builds) and
    returns the function that releases it; None where the platform has no file locks (the build then runs without
    one). The lock is `fcntl.flock` (POSIX) or `msvcrt.locking` (Windows): both belong to the open file, so the OS
    releases them when their process ends, even by SIGKILL."""
    import os
    import time

    try_lock, unlock = _lock_functions()
    if try_lock is None:
        return None
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + BUILD_LOCK_TIMEOUT
        waited = False
        while not try_lock(handle):
            if not waited:
                logger.warning(f"mHC: waiting for another process that is building the fused CPU kernels in {cache}")
                waited = True
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"another process has held {path} for more than {BUILD_LOCK_TIMEOUT:.0f} s while building the "
                    "fused CPU kernels"
                )
            time.sleep(0.2)
    except BaseException:
        os.close(handle)
        raise

    def release():
        try:
            unlock(handle)
        finally:
            os.close(handle)

    return release


def _lock_functions():
    """(try_lock(fd) -> bool, unlock(fd)) for this platform's process-owned file locks, or (None, None)."""
    import errno

    busy = {errno.EACCES, errno.EAGAIN, getattr(errno, "EDEADLOCK", errno.EDEADLK), errno.EDEADLK}
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is not None:

        def try_lock(handle):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as error:
                if error.errno in busy:
                    return False
                raise

        return try_lock, lambda handle: fcntl.flock(handle, fcntl.LOCK_UN)
    try:
        import msvcrt
    except ImportError:
        return None, None

    def try_lock_windows(handle):
        try:
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
            return True
        except OSError as error:
            if error.errno in busy:
                return False
            raise

    return try_lock_windows, lambda handle: msvcrt.locking(handle, msvcrt.LK_UNLCK, 1)


def _build(cpp_extension, name, flags, folder):
    """Compiles the extension in `folder` (which holds only this build) and imports it."""
    return cpp_extension.load_inline(
        name=name,
        cpp_sources=_SOURCE,
        functions=_FUNCTIONS,
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        build_directory=folder,
        verbose=False,
    )


def _import_library(name, path):
    """Imports the compiled extension module `name` from the file at `path`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
