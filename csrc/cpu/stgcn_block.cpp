// CPU kernels of the fused ST-GCN block's memory-bound passes; see stgcn_block.h and
// ugcn_fast/backends/torch_stgcn.py for the contract of each pass.
//
// Parallelism: a static partition of the rows over the threads. Reductions go to per-thread float64 partials
// (one C-vector per quantity) that are summed in thread order afterwards: no atomics, reproducible results.
// Channels are the contiguous, vectorised dimension (`omp simd`); every per-channel parameter is read once per
// row from L1.
#include "stgcn_block.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../stgcn_block_math.h"

namespace ugcn {
namespace cpu {
namespace {

using stgcn::bn_backward_element;
using stgcn::dropout_multiplier;
using stgcn::phase_slot;
using stgcn::relu;
using stgcn::relu_backward;

// Runs fn(thread, first_row, end_row) on a static partition of [0, rows); partials hold `width` doubles per
// thread and are summed, in thread order, into `result` (when non-null).
template <typename F>
void reduce_over_rows(int64_t rows, int threads, int64_t width, double* result, F&& fn) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, rows)));
  std::vector<double> partials(static_cast<size_t>(threads) * width, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t chunk = (rows + nt - 1) / nt;
    const int64_t first = std::min(rows, tid * chunk), end = std::min(rows, first + chunk);
    if (first < end) fn(partials.data() + static_cast<size_t>(tid) * width, first, end);
  }
  if (result == nullptr) return;
  std::fill(result, result + width, 0.0);
  for (int t = 0; t < threads; ++t) {
    const double* p = partials.data() + static_cast<size_t>(t) * width;
    for (int64_t i = 0; i < width; ++i) result[i] += p[i];
  }
}

struct Entry {
  int64_t v;
  double m;
};

// Non-zero weights of M (K, V, V) by output joint: entries of (w, k) are entries[offset[w*K+k] .. offset[w*K+k+1]).
struct SparseColumns {
  std::vector<Entry> entries;
  std::vector<int64_t> offset;
  SparseColumns(const double* M, int64_t K, int64_t V) : offset(V * K + 1, 0) {
    for (int64_t w = 0; w < V; ++w)
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t v = 0; v < V; ++v) {
          const double m = M[(k * V + v) * V + w];
          if (m != 0.0) entries.push_back(Entry{v, m});
        }
        offset[w * K + k + 1] = static_cast<int64_t>(entries.size());
      }
  }
};

}  // namespace

template <typename T>
void graph_aggregate(const GraphAggregation& g, const T* src, const T* bias_map, T* out, int threads) {
  const SparseColumns cols(g.M, g.K, g.V);
  const int64_t V = g.V, K = g.K, C = g.C;
  const int64_t src_row = g.contract ? K * C : C, out_row = g.contract ? C : K * C;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const T* s = src + grp * V * src_row;
    T* o = out + grp * V * out_row;
    for (int64_t w = 0; w < V; ++w) {
      if (g.contract) {
        T* acc = o + w * C;
        const T* b = bias_map ? bias_map + w * C : nullptr;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) acc[c] = b ? b[c] : T(0);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t e = cols.offset[w * K + k]; e < cols.offset[w * K + k + 1]; ++e) {
            const T m = T(cols.entries[e].m);
            const T* x = s + cols.entries[e].v * src_row + k * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) acc[c] += m * x[c];
          }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          T* acc = o + w * out_row + k * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acc[c] = T(0);
          for (int64_t e = cols.offset[w * K + k]; e < cols.offset[w * K + k + 1]; ++e) {
            const T m = T(cols.entries[e].m);
            const T* x = s + cols.entries[e].v * src_row;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) acc[c] += m * x[c];
          }
        }
      }
    }
  }
}

template <typename T>
void channel_stats(const T* x, int64_t rows, int64_t C, const T* bias_map, int64_t V, T* y, double* sums,
                   int threads) {
  reduce_over_rows(rows, threads, 2 * C, sums, [&](double* acc, int64_t first, int64_t end) {
    double* sum = acc;
    double* sumsq = acc + C;
    for (int64_t r = first; r < end; ++r) {
      const T* xr = x + r * C;
      if (bias_map) {
        const T* b = bias_map + (r % V) * C;
        T* yr = y + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const T value = xr[c] + b[c];
          yr[c] = value;
          sum[c] += double(value);
          sumsq[c] += double(value) * double(value);
        }
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          sum[c] += double(xr[c]);
          sumsq[c] += double(xr[c]) * double(xr[c]);
        }
      }
    }
  });
}

template <typename T>
void bn_relu_phases(const Phases& p, const T* z, const T* scale, const T* shift_map, T* h_ph, int threads) {
  const int64_t planes = p.stride * p.Tq, C = p.C;
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane)
    for (int64_t r = 0; r < p.rows; ++r) {
      const int64_t phase = plane / p.Tq, slot = plane % p.Tq;
      const int64_t t = slot * p.stride + phase - p.pad;
      T* h = h_ph + (plane * p.rows + r) * C;
      if (t < 0 || t >= p.T) {
        std::memset(h, 0, sizeof(T) * C);
        continue;
      }
      const T* zr = z + (t * p.rows + r) * C;
      const T* shift = shift_map + (r % p.V) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) h[c] = relu(zr[c] * scale[c] + shift[c]);
    }
}

template <typename T>
void to_time_major(const T* x, int64_t N, int64_t C, int64_t T_in, int64_t V, T* out, int threads) {
  const int64_t TV = T_in * V;
  // n outer, t inner: frames t and t + 1 of a channel share cache lines (V values each), read once
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T_in; ++t) {
      const T* __restrict src = x + n * C * TV + t * V;
      T* __restrict dst = out + (t * N + n) * V * C;
      if (C < 16) {  // a few channels: unit-stride reads of each channel's V values
        for (int64_t c = 0; c < C; ++c)
          for (int64_t v = 0; v < V; ++v) dst[v * C + c] = src[c * TV + v];
        continue;
      }
      for (int64_t v = 0; v < V; ++v) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dst[v * C + c] = src[c * TV + v];
      }
    }
}

namespace {

// The dropout multiplier of element e = o + c (kDrop: a Dropout<T>::Kind known at compile time).
template <int kDrop, typename T>
inline T drop(const Dropout<T>& d, int64_t e) {
  if (kDrop == Dropout<T>::kMask) return d.mask[e];
  if (kDrop == Dropout<T>::kHashed) return dropout_multiplier(d.seed, uint64_t(e), d.threshold, d.scale);
  return T(1);
}

// Calls body(std::integral_constant<int, kind>) for the dropout kind known at run time.
template <typename T, typename F>
void with_dropout_kind(const Dropout<T>& d, F&& body) {
  if (d.kind == Dropout<T>::kMask)
    body(std::integral_constant<int, Dropout<T>::kMask>{});
  else if (d.kind == Dropout<T>::kHashed)
    body(std::integral_constant<int, Dropout<T>::kHashed>{});
  else
    body(std::integral_constant<int, Dropout<T>::kNone>{});
}

template <int kDrop, int kResidual, typename T>
void block_output_rows(int64_t rows, int64_t C, const T* u, const T* scale2, const T* shift2, const Dropout<T>& dropout,
                       const T* res, const T* scale3, const T* shift3, T* out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      T y = u[o + c] * scale2[c] + shift2[c];
      if (kDrop != Dropout<T>::kNone) y = y * drop<kDrop>(dropout, o + c);
      if (kResidual == kResidualIdentity) y = y + res[o + c];
      if (kResidual == kResidualConv) y = y + (res[o + c] * scale3[c] + shift3[c]);
      out[o + c] = relu(y);
    }
  }
}

}  // namespace

template <typename T>
void block_output(int64_t rows, int64_t C, const T* u, const T* scale2, const T* shift2, Dropout<T> dropout,
                  const T* res, const T* scale3, const T* shift3, T* out, int threads) {
  const int kind = res == nullptr ? kResidualNone : scale3 == nullptr ? kResidualIdentity : kResidualConv;
  with_dropout_kind(dropout, [&](auto drop_kind) {
    constexpr int D = decltype(drop_kind)::value;
    if (kind == kResidualNone)
      block_output_rows<D, kResidualNone>(rows, C, u, scale2, shift2, dropout, res, scale3, shift3, out, threads);
    else if (kind == kResidualIdentity)
      block_output_rows<D, kResidualIdentity>(rows, C, u, scale2, shift2, dropout, res, scale3, shift3, out, threads);
    else
      block_output_rows<D, kResidualConv>(rows, C, u, scale2, shift2, dropout, res, scale3, shift3, out, threads);
  });
}

namespace {

// Per-channel coefficients of a batch-statistics BatchNorm backward, in the data type so the per-element work
// vectorises at full width (the reductions that produce them are float64):
//   dx = k (dy - mean_dy - xhat mean_dy_xhat),  xhat = (x - mean) invstd,  k = weight invstd.
template <typename T>
struct BatchNormBackward {
  std::vector<T> mean, invstd, k, mean_dy, mean_dy_xhat;
  BatchNormBackward(const BatchNormSaved& bn, int64_t C) : mean(C), invstd(C), k(C), mean_dy(C), mean_dy_xhat(C) {
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = T(bn.mean[c]);
      invstd[c] = T(bn.invstd[c]);
      k[c] = T(bn.weight[c] * bn.invstd[c]);
    }
  }
  void set_reductions(const double* sum_dy, const double* sum_dy_xhat, double M) {
    for (size_t c = 0; c < k.size(); ++c) {
      mean_dy[c] = T(sum_dy[c] / M);
      mean_dy_xhat[c] = T(sum_dy_xhat[c] / M);
    }
  }
};

// acc[0:C] += d, acc[C:2C] += d * xhat over one row; d = relu'(y) dy times dropout's multiplier of element
// e0 + c (kDrop = Dropout<T>::kNone: none).
template <int kDrop, typename T>
inline void accumulate_bn_row(const T* __restrict dout, const T* __restrict y, const Dropout<T>& dropout, int64_t e0,
                              const T* __restrict x, const T* __restrict mean, const T* __restrict invstd, int64_t C,
                              double* __restrict sum_d, double* __restrict sum_d_xhat) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const T g = relu_backward(dout[c], y[c]);
    const T d = kDrop != Dropout<T>::kNone ? g * drop<kDrop>(dropout, e0 + c) : g;
    sum_d[c] += double(d);
    sum_d_xhat[c] += double(d * ((x[c] - mean[c]) * invstd[c]));
  }
}

// dx = BatchNorm backward of d over one row, and acc += dx.
template <int kDrop, typename T>
inline void apply_bn_row(const T* __restrict dout, const T* __restrict y, const Dropout<T>& dropout, int64_t e0,
                         const T* __restrict x, const BatchNormBackward<T>& bn, int64_t C, T* __restrict dx,
                         double* __restrict sum_dx) {
  const T* __restrict mean = bn.mean.data();
  const T* __restrict invstd = bn.invstd.data();
  const T* __restrict k = bn.k.data();
  const T* __restrict mean_dy = bn.mean_dy.data();
  const T* __restrict mean_dy_xhat = bn.mean_dy_xhat.data();
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const T g = relu_backward(dout[c], y[c]);
    const T d = kDrop != Dropout<T>::kNone ? g * drop<kDrop>(dropout, e0 + c) : g;
    const T value = bn_backward_element<T, T>(d, x[c], mean[c], invstd[c], k[c], mean_dy[c], mean_dy_xhat[c]);
    dx[c] = value;
    sum_dx[c] += double(value);
  }
}

template <int kDrop, typename T>
void block_output_backward_impl(int64_t rows, int64_t C, const T* dout, const T* out, const T* u, const Dropout<T>& dropout,
                                BatchNormSaved bn2_saved, int residual, const T* r0, BatchNormSaved bn3_saved, T* du,
                                T* dres, double* sums, int threads) {
  const bool conv = residual == kResidualConv;
  BatchNormBackward<T> bn2(bn2_saved, C);
  BatchNormBackward<T> bn3(conv ? bn3_saved : bn2_saved, C);
  // pass 1: sum(d), sum(d xhat2) with d = relu'(out) dout mask; conv residual: sum(g), sum(g xhat3), g = relu'(out) dout
  std::vector<double> red(4 * C);
  reduce_over_rows(rows, threads, 4 * C, red.data(), [&](double* acc, int64_t first, int64_t end) {
    for (int64_t r = first; r < end; ++r) {
      const int64_t o = r * C;
      accumulate_bn_row<kDrop>(dout + o, out + o, dropout, o, u + o, bn2.mean.data(), bn2.invstd.data(), C, acc,
                               acc + C);
      if (conv)
        accumulate_bn_row<Dropout<T>::kNone>(dout + o, out + o, dropout, o, r0 + o, bn3.mean.data(), bn3.invstd.data(),
                                             C, acc + 2 * C, acc + 3 * C);
    }
  });
  const double M = double(rows);
  bn2.set_reductions(red.data(), red.data() + C, M);
  bn3.set_reductions(red.data() + 2 * C, red.data() + 3 * C, M);
  // pass 2: du, dres and their sums (the gradients of the biases of the convolutions feeding BN2 / BN3)
  std::vector<double> bias_sums(2 * C);
  reduce_over_rows(rows, threads, 2 * C, bias_sums.data(), [&](double* acc, int64_t first, int64_t end) {
    for (int64_t r = first; r < end; ++r) {
      const int64_t o = r * C;
      apply_bn_row<kDrop>(dout + o, out + o, dropout, o, u + o, bn2, C, du + o, acc);
      if (conv) {
        apply_bn_row<Dropout<T>::kNone>(dout + o, out + o, dropout, o, r0 + o, bn3, C, dres + o, acc + C);
      } else if (residual == kResidualIdentity) {
        const T* __restrict go = dout + o;
        const T* __restrict yo = out + o;
        T* __restrict d = dres + o;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) d[c] = relu_backward(go[c], yo[c]);
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    sums[c] = red[C + c];              // dweight2 = sum(d xhat2)
    sums[C + c] = red[c];              // dbias2 = sum(d)
    sums[2 * C + c] = red[3 * C + c];  // dweight3
    sums[3 * C + c] = red[2 * C + c];  // dbias3
    sums[4 * C + c] = bias_sums[c];
    sums[5 * C + c] = bias_sums[C + c];
  }
}

}  // namespace

template <typename T>
void block_output_backward(int64_t rows, int64_t C, const T* dout, const T* out, const T* u, Dropout<T> dropout,
                           BatchNormSaved bn2, int residual, const T* r0, BatchNormSaved bn3, T* du, T* dres,
                           double* sums, int threads) {
  with_dropout_kind(dropout, [&](auto drop_kind) {
    block_output_backward_impl<decltype(drop_kind)::value>(rows, C, dout, out, u, dropout, bn2, residual, r0, bn3, du,
                                                           dres, sums, threads);
  });
}

template <typename T>
void bn_relu_phases_backward(const Phases& p, const T* dh_ph, const T* h_ph, const T* z, BatchNormSaved bn1_saved,
                             T* dz, double* sums, double* joint_sums, int threads) {
  const int64_t C = p.C, rows = p.T * p.rows;
  BatchNormBackward<T> bn1(bn1_saved, C);
  // row i = (t, r) receives dh where h > 0 from the phase buffer; frames no tap reads receive nothing
  auto phase_offset = [&](int64_t i) -> int64_t {
    const auto ps = phase_slot(i / p.rows, p.pad, p.stride);
    return ps.slot < p.Tq ? ((ps.phase * p.Tq + ps.slot) * p.rows + i % p.rows) * C : -1;
  };
  std::vector<double> red(2 * C);
  reduce_over_rows(rows, threads, 2 * C, red.data(), [&](double* acc, int64_t first, int64_t end) {
    for (int64_t i = first; i < end; ++i) {
      const int64_t o = phase_offset(i);
      if (o >= 0)
        accumulate_bn_row<Dropout<T>::kNone>(dh_ph + o, h_ph + o, Dropout<T>{}, 0, z + i * C, bn1.mean.data(),
                                             bn1.invstd.data(), C, acc, acc + C);
    }
  });
  bn1.set_reductions(red.data(), red.data() + C, double(rows));
  std::vector<T> zeros(C, T(0)), ones(C, T(1));
  reduce_over_rows(rows, threads, p.V * C, joint_sums, [&](double* acc, int64_t first, int64_t end) {
    for (int64_t i = first; i < end; ++i) {
      const int64_t o = phase_offset(i);
      double* joint = acc + ((i % p.rows) % p.V) * C;
      // an unread frame: upstream 0, i.e. relu_backward(0, 1)
      apply_bn_row<Dropout<T>::kNone>(o >= 0 ? dh_ph + o : zeros.data(), o >= 0 ? h_ph + o : ones.data(),
                                      Dropout<T>{}, 0, z + i * C, bn1, C, dz + i * C, joint);
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    sums[c] = red[C + c];  // dweight1
    sums[C + c] = red[c];  // dbias1
  }
}

#define UGCN_INSTANTIATE(T)                                                                                          \
  template void graph_aggregate<T>(const GraphAggregation&, const T*, const T*, T*, int);                           \
  template void channel_stats<T>(const T*, int64_t, int64_t, const T*, int64_t, T*, double*, int);                  \
  template void bn_relu_phases<T>(const Phases&, const T*, const T*, const T*, T*, int);                            \
  template void to_time_major<T>(const T*, int64_t, int64_t, int64_t, int64_t, T*, int);                            \
  template void block_output<T>(int64_t, int64_t, const T*, const T*, const T*, Dropout<T>, const T*, const T*,     \
                                const T*, T*, int);                                                                  \
  template void block_output_backward<T>(int64_t, int64_t, const T*, const T*, const T*, Dropout<T>, BatchNormSaved,\
                                         int, const T*, BatchNormSaved, T*, T*, double*, int);                      \
  template void bn_relu_phases_backward<T>(const Phases&, const T*, const T*, const T*, BatchNormSaved, T*, double*, \
                                           double*, int);
UGCN_INSTANTIATE(float)
UGCN_INSTANTIATE(double)
#undef UGCN_INSTANTIATE

}  // namespace cpu
}  // namespace ugcn
