// Fused CPU motion loss (SPEC §1): loss and unit gradients in two passes over the data, no encoded tensor.
//
// Parallelism: one OpenMP thread owns one sample at a time (static schedule). A sample's pred, target and
// gradients are T * J * D values (20 KB each at T = 96, J = 17, D = 3), so everything a thread touches stays in
// its L2, the gradient is written by its owner only (no atomics), and the loss is summed in a fixed order:
// results are bitwise reproducible whatever the thread count.
//
// Layout: each sample is first copied into a planar scratch (component-major, x[d][n] with the frame-joint
// n = t * J + j), paid once per sample instead of de-interleaving (x, y, z) in every pass. The pairs of one
// interval are then a flat run, frame-joint n with n + tau * J, and every pass is a unit-stride `omp simd` loop:
//   pass 1, statistics (one read of the target): point norms, encoding magnitudes -> den;
//   pass 2, per interval: (a) loss and upstream gradient g[n] of every pair into a scratch plane,
//           (b) each frame-joint gathers what it receives as a pair's start (from g[n]) and as a pair's end
//           (from g[n - tau J]): one read-modify-write of the gradient per interval, no overlap between lanes.
//           (Fusing (a) and (b) into one loop that also adds to dP[n + tau J] was measured 3x slower: the
//           misaligned reload of a gradient vector stored a few iterations earlier defeats store forwarding.)
//   finally the planar gradients are written back to the caller's packed (T, J, D) layout.
// D = 3 (every operator; the generic form above serves other D): (a) keeps one upstream plane set per interval,
// and (b) runs once after all intervals, up to four intervals per pass, summing in registers and writing the
// packed gradient directly (no zero fill, no per-interval read-modify-write, no separate write-back: cross fwd+bwd
// ~2.1 -> ~1.8 ms at the default shape; inner and sub 1.3-1.5x). The planes carry zero padding of the largest
// shift on both sides, so out-of-range pairs add exact zeros instead of splitting the loop into runs. For cross
// and inner with one den per sample (normalize "sample", the default, or "none") pass 1 and pass 2(a) are one loop
// per interval (sample_scaled_loss_and_grad): the target's pair is encoded once for its statistics and for the
// loss, the planes are unscaled, and (b) scales each interval's sum by its w / den (cross: raw kernel -16 % with
// gradients, -15 % without; inner -8 % and -17 %). There the cross operator's planes hold the gradient products
// b x s and s x a (s = sign(mP - mG)), both stored at the pair's index n from values pass (a) has in registers, so
// (b) reads two plane triples per interval (start at n, end at n - shift) instead of the sign planes and both
// shifted points: the sign-plane gather of four intervals needs more address registers than x86-64 has and
// spills (raw cross kernel with the pred gradient 1.3-1.45x faster on the 2-core EPYC, one and two threads). A
// forward without gradients stores no planes. (Tried and not kept: a float32 rsqrt14 + Newton square root for
// pass 1, software prefetch of the next sample, storing the end products at their frame-joint n + shift so that
// (b) reads aligned planes only; none measured faster.)
#include "motion_loss.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>

#include "../motion_loss_math.h"
#include "aligned_buffer.h"

namespace ugcn {
namespace cpu {
namespace {

// One cache-line aligned block per thread, kept between calls (up to kKeptBytes) and grown when a call needs more,
// zero-filled for every call. (Allocated per call, the scratch cost ~0.15 ms a call with two threads, page faults
// on the second thread's arena: more than a small batch's whole loss.) OpenMP's pool threads outlive the call, so
// the block is reused; it is freed when its thread exits.
template <typename scalar_t>
struct ThreadBlock {
  // Kept between calls up to this size (the default shape needs ~0.3 MiB); a larger one (long sequences, many
  // intervals) is freed when its call ends.
  static constexpr int64_t kKeptBytes = int64_t(8) << 20;
  static inline thread_local std::unique_ptr<Aligned<scalar_t>> block;
  static inline thread_local int64_t capacity = 0;

  static scalar_t* zeroed(int64_t n) {
    if (n > capacity) {
      capacity = 0;
      block.reset();
      block = std::make_unique<Aligned<scalar_t>>(static_cast<size_t>(n));
      capacity = n;
    }
    mark_readable(block->data(), static_cast<size_t>(capacity) * sizeof(scalar_t));  // the last call's redzones
    std::fill(block->data(), block->data() + n, scalar_t(0));
    return block->data();
  }
  static void release_if_large() {
    if (capacity * int64_t(sizeof(scalar_t)) > kKeptBytes) {
      capacity = 0;
      block.reset();
    }
  }
};

// A thread's scratch planes for one call; `plane` = T * J values. Every planar buffer stores component d at
// d * stride, preceded and followed by `pad` (>= the largest interval's shift) zeros, so the fused gather
// reads past either end of a plane without a test. pad, stride and every buffer's start are whole cache lines
// (64 bytes for float), so the passes' accesses at n (all the stores) are aligned; those at n +- shift cannot be.
template <typename scalar_t>
struct Scratch {
  static constexpr int64_t kLine = 16;  // elements per alignment step (>= 64 bytes)
  int64_t plane, pad, stride;
  scalar_t *P_, *G_;      // (D, stride)  the sample, planar (padded)
  scalar_t *dP_, *dG_;    // (D, stride)  gradients, planar (generic gather)
  scalar_t* norms;        // (T J)     ||G[t, j]||
  scalar_t* magnitude;    // (T J)     ||mG[n]|| of the current interval
  scalar_t* inv_den;      // (T J)     1 / den expanded over n (joint mode)
  scalar_t* upstream_;    // (planes, stride)  upstream planes: per interval (D = 3) or one shared set
  scalar_t* joint_sum;    // (J)

  Scratch(int64_t T, int64_t J, int D, int max_tau, int n_upstream_planes)
      : plane(T * J), pad(lines(int64_t(max_tau) * J)), stride(lines(plane + 2 * pad)) {
    const int64_t sizes[] = {stride * D, stride * D, stride * D, stride * D, lines(plane),
                             lines(plane), lines(plane), stride * n_upstream_planes, lines(J)};
    const int64_t redzone = static_cast<int64_t>(kRedzoneBytes / sizeof(scalar_t));
    int64_t total = 0;
    for (int64_t n : sizes) total += n + redzone;
    scalar_t* next = ThreadBlock<scalar_t>::zeroed(total);
    scalar_t** buffers[] = {&P_, &G_, &dP_, &dG_, &norms, &magnitude, &inv_den, &upstream_, &joint_sum};
    for (int k = 0; k < 9; ++k) {
      *buffers[k] = next;
      next += sizes[k];
      mark_unreadable(next, kRedzoneBytes);
      next += redzone;
    }
  }
  ~Scratch() { ThreadBlock<scalar_t>::release_if_large(); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  static int64_t lines(int64_t n) { return (n + kLine - 1) / kLine * kLine; }

  scalar_t* P() { return P_ + pad; }
  scalar_t* G() { return G_ + pad; }
  scalar_t* dP() { return dP_ + pad; }
  scalar_t* dG() { return dG_ + pad; }
  // Set u of sets of `per_set` planes.
  scalar_t* upstream(int u, int per_set) { return upstream_ + int64_t(u) * per_set * stride + pad; }
};

template <int DC, typename scalar_t>
void to_planar(const scalar_t* x, int64_t n_points, int D_runtime, scalar_t* planar, int64_t cs) {
  if (DC > 0) {  // one pass over the sample, all coordinates of a point per iteration
#pragma omp simd
    for (int64_t n = 0; n < n_points; ++n)
      for (int d = 0; d < DC; ++d) planar[d * cs + n] = x[n * DC + d];
    return;
  }
  const int D = D_runtime;
  for (int d = 0; d < D; ++d) {
    scalar_t* row = planar + d * cs;
#pragma omp simd
    for (int64_t n = 0; n < n_points; ++n) row[n] = x[n * D + d];
  }
}

template <int DC, typename scalar_t>
void from_planar(const scalar_t* planar, int64_t n_points, int D_runtime, scalar_t sign, scalar_t* x,
                 int64_t cs) {
  if (DC > 0) {
#pragma omp simd
    for (int64_t n = 0; n < n_points; ++n)
      for (int d = 0; d < DC; ++d) x[n * DC + d] = sign * planar[d * cs + n];
    return;
  }
  const int D = D_runtime;
  for (int d = 0; d < D; ++d) {
    const scalar_t* row = planar + d * cs;
#pragma omp simd
    for (int64_t n = 0; n < n_points; ++n) x[n * D + d] = sign * row[n];
  }
}

// ---- pass 1: den[i, j] of one sample from its planar target -----------------------------------------------
template <int OP, int DC, typename scalar_t>
void sample_denominators(int64_t T, int64_t J, int D_runtime, const std::vector<int>& intervals, int normalize,
                         scalar_t eps, Scratch<scalar_t>& s, scalar_t* den) {
  const int D = DC > 0 ? DC : D_runtime;
  const int nI = static_cast<int>(intervals.size());
  if (normalize == kNormNone) {
    std::fill(den, den + nI * J, scalar_t(1));
    return;
  }
  const int64_t TJ = s.plane, cs = s.stride;
  const scalar_t* G = s.G();
  scalar_t* norms = s.norms;
#pragma omp simd
  for (int64_t n = 0; n < TJ; ++n) norms[n] = point_norm(G + n, D, cs);

  for (int i = 0; i < nI; ++i) {
    const int64_t shift = int64_t(intervals[i]) * J, n_pairs = TJ - shift;
    scalar_t* mag = s.magnitude;
    scalar_t sum_norm_products = 0;
#pragma omp simd reduction(+ : sum_norm_products)
    for (int64_t n = 0; n < n_pairs; ++n) {
      mag[n] = pair_encoding_magnitude<OP>(G + n, G + n + shift, D, cs);
      sum_norm_products += norms[n] * norms[n + shift];
    }
    const int64_t n_frames = T - intervals[i];
    if (normalize == kNormSample) {
      scalar_t sum_magnitude = 0;
#pragma omp simd reduction(+ : sum_magnitude)
      for (int64_t n = 0; n < n_pairs; ++n) sum_magnitude += mag[n];
      const scalar_t d = denominator<scalar_t>(sum_magnitude, scalar_t(n_pairs), sum_norm_products,
                                               scalar_t(n_pairs), eps);
      std::fill(den + i * J, den + (i + 1) * J, d);
    } else {  // joint: mu per joint over t, rows added in frame order
      scalar_t* acc = s.joint_sum;
      std::fill(acc, acc + J, scalar_t(0));
      for (int64_t t = 0; t < n_frames; ++t) {
#pragma omp simd
        for (int64_t j = 0; j < J; ++j) acc[j] += mag[t * J + j];
      }
      for (int64_t j = 0; j < J; ++j)
        den[i * J + j] = denominator<scalar_t>(acc[j], scalar_t(n_frames), sum_norm_products, scalar_t(n_pairs), eps);
    }
  }
}

// Pass 2(b): frame-joint n receives b x g as the start of pair n (n < n_pairs) and g x a as the end of pair
// n - shift (n >= shift). Three unit-stride runs so no lane tests its position.
template <int OP, int DC, typename scalar_t>
void gather_interval_grad(const scalar_t* x, const scalar_t* g, int64_t TJ, int64_t cs, int64_t shift,
                          int D_runtime, scalar_t* dx) {
  const int D = DC > 0 ? DC : D_runtime;
  const int64_t n_pairs = TJ - shift;
  const int64_t start_only_end = std::min(shift, n_pairs);  // [0, min(shift, n_pairs)): starts only
#pragma omp simd
  for (int64_t n = 0; n < start_only_end; ++n) accumulate_grad_start<OP>(x + n + shift, g + n, D, dx + n, cs);
#pragma omp simd
  for (int64_t n = shift; n < n_pairs; ++n) {  // both roles (empty when shift >= n_pairs)
    accumulate_grad_start<OP>(x + n + shift, g + n, D, dx + n, cs);
    accumulate_grad_end<OP>(x + n - shift, g + n - shift, D, dx + n, cs);
  }
#pragma omp simd
  for (int64_t n = std::max(shift, n_pairs); n < TJ; ++n)  // ends only
    accumulate_grad_end<OP>(x + n - shift, g + n - shift, D, dx + n, cs);
}

// D = 3: the intervals' gathers fused, up to four per pass, the last pass also writing the caller's packed (T, J, 3)
// gradient. Frame-joint n sums, interval by interval in the order of the generic path (start, then end), what it
// receives as the start of pair n and as the end of pair n - shift; out-of-range pairs read the zero padding of x
// and of g (both factors exactly zero, so adding them changes nothing), so no lane tests its position. g: the
// chunk's first interval's C planes (C = components<OP>(3): 3, or 1 for inner), the next intervals' at steps of
// C cs. acc: planar running sum between passes (when there are more than four intervals).
template <int OP, typename scalar_t>
inline __attribute__((always_inline)) void add_start_and_end(scalar_t& ax, scalar_t& ay, scalar_t& az,
                                                             const scalar_t* x, const scalar_t* g, int64_t s,
                                                             int64_t cs) {
  // start: b op g with b = x[n + s], g = g[n]; end: g' op a with g' = g[n - s], a = x[n - s]. Each product is
  // fused into the running sum (std::fma, explicit: the build keeps -ffp-contract=off for the encodings, whose
  // x x x = 0 needs separately rounded products; a gradient needs no such cancellation, and a zero upstream
  // still adds exactly zero).
  if (OP == kCross) {
    const scalar_t bx = x[s], by = x[s + cs], bz = x[s + 2 * cs];
    const scalar_t gx = g[0], gy = g[cs], gz = g[2 * cs];
    ax = std::fma(-bz, gy, std::fma(by, gz, ax));
    ay = std::fma(-bx, gz, std::fma(bz, gx, ay));
    az = std::fma(-by, gx, std::fma(bx, gy, az));
    const scalar_t hx = g[-s], hy = g[cs - s], hz = g[2 * cs - s];
    const scalar_t cx = x[-s], cy = x[cs - s], cz = x[2 * cs - s];
    ax = std::fma(-hz, cy, std::fma(hy, cz, ax));
    ay = std::fma(-hx, cz, std::fma(hz, cx, ay));
    az = std::fma(-hy, cx, std::fma(hx, cy, az));
  } else if (OP == kInner) {  // start: g b, end: g' a
    const scalar_t g0 = g[0], h0 = g[-s];
    ax = std::fma(h0, x[-s], std::fma(g0, x[s], ax));
    ay = std::fma(h0, x[cs - s], std::fma(g0, x[s + cs], ay));
    az = std::fma(h0, x[2 * cs - s], std::fma(g0, x[s + 2 * cs], az));
  } else {  // sub: start +g, end -g'
    ax = (ax + g[0]) - g[-s];
    ay = (ay + g[cs]) - g[cs - s];
    az = (az + g[2 * cs]) - g[2 * cs - s];
  }
}

// The same, the interval's upstream scaled by `scale` (its w / den) once its six products are summed.
template <int OP, typename scalar_t>
inline __attribute__((always_inline)) void add_scaled_start_and_end(scalar_t& ax, scalar_t& ay, scalar_t& az,
                                                                    const scalar_t* x, const scalar_t* g, int64_t s,
                                                                    int64_t cs, scalar_t scale) {
  scalar_t tx = 0, ty = 0, tz = 0;
  add_start_and_end<OP>(tx, ty, tz, x, g, s, cs);
  ax = std::fma(scale, tx, ax);
  ay = std::fma(scale, ty, ay);
  az = std::fma(scale, tz, az);
}

// The gathers' running sum of frame-joint n between passes of up to four intervals: the first pass starts from 0,
// a later one from the planar accumulator; the last writes the caller's packed (T, J, 3) gradient times sign.
template <bool FIRST, typename scalar_t>
inline __attribute__((always_inline)) void load_running_sum(const scalar_t* acc, int64_t n, int64_t cs, scalar_t& ax,
                                                            scalar_t& ay, scalar_t& az) {
  if (FIRST) {
    ax = ay = az = 0;
  } else {
    ax = acc[n];
    ay = acc[n + cs];
    az = acc[n + 2 * cs];
  }
}

template <bool LAST, typename scalar_t>
inline __attribute__((always_inline)) void store_running_sum(scalar_t ax, scalar_t ay, scalar_t az, scalar_t sign,
                                                             int64_t n, int64_t cs, scalar_t* acc, scalar_t* out) {
  if (LAST) {
    out[n * 3 + 0] = sign * ax;
    out[n * 3 + 1] = sign * ay;
    out[n * 3 + 2] = sign * az;
  } else {
    acc[n] = ax;
    acc[n + cs] = ay;
    acc[n + 2 * cs] = az;
  }
}

// Splits nI intervals into passes of up to four: visit(std::integral_constant<int, K>, first interval, first pass,
// last pass) with K, FIRST and LAST as compile-time constants, so each pass's loop keeps its sums in registers.
template <typename Visit>
void for_each_interval_chunk(int nI, Visit&& visit) {
  auto with_flags = [&](auto k, int c, bool first, bool last) {
    using yes = std::true_type;
    using no = std::false_type;
    if (first && last) return visit(k, c, yes{}, yes{});
    if (first) return visit(k, c, yes{}, no{});
    if (last) return visit(k, c, no{}, yes{});
    visit(k, c, no{}, no{});
  };
  for (int c = 0; c < nI; c += 4) {
    const int k = std::min(4, nI - c);
    const bool first = c == 0, last = c + k == nI;
    switch (k) {
      case 1: with_flags(std::integral_constant<int, 1>{}, c, first, last); break;
      case 2: with_flags(std::integral_constant<int, 2>{}, c, first, last); break;
      case 3: with_flags(std::integral_constant<int, 3>{}, c, first, last); break;
      default: with_flags(std::integral_constant<int, 4>{}, c, first, last); break;
    }
  }
}

// SCALED: interval i's planes hold sign(mP - mG) and scales[i] = w / den multiplies the sum of its products;
// otherwise the planes hold the scaled upstream already.
template <int OP, int K, bool FIRST, bool LAST, bool SCALED, typename scalar_t>
void gather_chunk(const scalar_t* x, const scalar_t* g, int64_t TJ, int64_t cs, const int64_t* shifts,
                        const scalar_t* scales, scalar_t sign, scalar_t* acc, scalar_t* out) {
  const int64_t step = int64_t(components<OP>(3)) * cs;
  const int64_t s0 = shifts[0], s1 = K > 1 ? shifts[1] : 0, s2 = K > 2 ? shifts[2] : 0, s3 = K > 3 ? shifts[3] : 0;
  const scalar_t f0 = SCALED ? scales[0] : 0, f1 = SCALED && K > 1 ? scales[1] : 0,
                 f2 = SCALED && K > 2 ? scales[2] : 0, f3 = SCALED && K > 3 ? scales[3] : 0;
#pragma omp simd
  for (int64_t n = 0; n < TJ; ++n) {
    scalar_t ax, ay, az;
    load_running_sum<FIRST>(acc, n, cs, ax, ay, az);
    if (SCALED) {
      add_scaled_start_and_end<OP>(ax, ay, az, x + n, g + n, s0, cs, f0);
      if (K > 1) add_scaled_start_and_end<OP>(ax, ay, az, x + n, g + step + n, s1, cs, f1);
      if (K > 2) add_scaled_start_and_end<OP>(ax, ay, az, x + n, g + 2 * step + n, s2, cs, f2);
      if (K > 3) add_scaled_start_and_end<OP>(ax, ay, az, x + n, g + 3 * step + n, s3, cs, f3);
    } else {
      add_start_and_end<OP>(ax, ay, az, x + n, g + n, s0, cs);
      if (K > 1) add_start_and_end<OP>(ax, ay, az, x + n, g + step + n, s1, cs);
      if (K > 2) add_start_and_end<OP>(ax, ay, az, x + n, g + 2 * step + n, s2, cs);
      if (K > 3) add_start_and_end<OP>(ax, ay, az, x + n, g + 3 * step + n, s3, cs);
    }
    store_running_sum<LAST>(ax, ay, az, sign, n, cs, acc, out);
  }
}

// scales: null when the upstream planes are scaled already, else each interval's w / den (see gather_chunk).
template <int OP, typename scalar_t>
void gather_all_intervals(const scalar_t* x, const scalar_t* g, int64_t TJ, int64_t cs, const int64_t* shifts,
                          const scalar_t* scales, int nI, scalar_t sign, scalar_t* acc, scalar_t* out) {
  for_each_interval_chunk(nI, [&](auto k, int c, auto first, auto last) {
    constexpr int K = decltype(k)::value;
    constexpr bool FIRST = decltype(first)::value, LAST = decltype(last)::value;
    const scalar_t* gc = g + int64_t(components<OP>(3)) * c * cs;
    if (scales)
      gather_chunk<OP, K, FIRST, LAST, true>(x, gc, TJ, cs, shifts + c, scales + c, sign, acc, out);
    else
      gather_chunk<OP, K, FIRST, LAST, false>(x, gc, TJ, cs, shifts + c, scales, sign, acc, out);
  });
}

// One interval of the cross operator with one den per sample (sample_scaled_loss_and_grad): the raw loss sum
// |mP - mG|, kStats the target's statistics (sum of ||mG||, sum of ||a|| ||b||), and for each gradient wanted
// (kGradP, kGradG) the pair's gradient products with the upstream's sign s = sign(mP - mG) (0 for a zero or NaN
// difference, as component_upstream): start = b x s, what frame-joint n receives as the start of pair n, and
// end = s x a, what frame-joint n + shift receives as the end of pair n. Both are stored at the pair's index n
// (aligned stores of values already in registers), so the gather reads two plane triples per interval instead of
// the sign planes and both shifted points. Plane layout at `planes`, components cs apart: pred start xyz, pred end
// xyz, then (kGradG) target start xyz, target end xyz. Without a gradient no planes are stored. Scalar locals, not
// Vec3 / Upstream: with the statistics in the same loop GCC does not vectorise the struct form.
template <bool kStats, bool kGradP, bool kGradG, typename scalar_t>
void cross_interval_pass(const scalar_t* P, const scalar_t* G, const scalar_t* norms, int64_t n_pairs, int64_t shift,
                         int64_t cs, scalar_t* planes, scalar_t& sum_magnitude, scalar_t& sum_norm_products,
                         scalar_t& raw) {
  scalar_t* target_planes = planes + (kGradP ? 6 * cs : 0);
  scalar_t magnitudes = 0, norm_products = 0, loss = 0;
#pragma omp simd reduction(+ : magnitudes, norm_products, loss)
  for (int64_t n = 0; n < n_pairs; ++n) {
    const scalar_t gx0 = G[n], gy0 = G[n + cs], gz0 = G[n + 2 * cs];
    const scalar_t gx1 = G[n + shift], gy1 = G[n + shift + cs], gz1 = G[n + shift + 2 * cs];
    const scalar_t mx = gy0 * gz1 - gz0 * gy1, my = gz0 * gx1 - gx0 * gz1, mz = gx0 * gy1 - gy0 * gx1;
    if (kStats) {
      magnitudes += std::sqrt(mx * mx + my * my + mz * mz);
      norm_products += norms[n] * norms[n + shift];
    }
    const scalar_t px0 = P[n], py0 = P[n + cs], pz0 = P[n + 2 * cs];
    const scalar_t px1 = P[n + shift], py1 = P[n + shift + cs], pz1 = P[n + shift + 2 * cs];
    const scalar_t dx = (py0 * pz1 - pz0 * py1) - mx, dy = (pz0 * px1 - px0 * pz1) - my,
                   dz = (px0 * py1 - py0 * px1) - mz;
    const scalar_t ax = std::fabs(dx), ay = std::fabs(dy), az = std::fabs(dz);
    if (kGradP || kGradG) {
      const scalar_t sx = ax > scalar_t(0) ? std::copysign(scalar_t(1), dx) : scalar_t(0);
      const scalar_t sy = ay > scalar_t(0) ? std::copysign(scalar_t(1), dy) : scalar_t(0);
      const scalar_t sz = az > scalar_t(0) ? std::copysign(scalar_t(1), dz) : scalar_t(0);
      auto store_products = [&](scalar_t* out, scalar_t x0, scalar_t y0, scalar_t z0, scalar_t x1, scalar_t y1,
                                scalar_t z1) {
        out[n] = y1 * sz - z1 * sy;  // start: b x s
        out[n + cs] = z1 * sx - x1 * sz;
        out[n + 2 * cs] = x1 * sy - y1 * sx;
        out[n + 3 * cs] = sy * z0 - sz * y0;  // end: s x a
        out[n + 4 * cs] = sz * x0 - sx * z0;
        out[n + 5 * cs] = sx * y0 - sy * x0;
      };
      if (kGradP) store_products(planes, px0, py0, pz0, px1, py1, pz1);
      if (kGradG) store_products(target_planes, gx0, gy0, gz0, gx1, gy1, gz1);
    }
    loss += ax + ay + az;
  }
  sum_magnitude = magnitudes;
  sum_norm_products = norm_products;
  raw = loss;
}

// The gradient of the cross operator from cross_interval_pass's product planes, up to four intervals per pass:
// frame-joint n gathers sum_i scale_i (start_i[n] + end_i[n - shift_i]); the zero padding before each plane and
// the never-written tail [n_pairs, T J) make out-of-range pairs add exact zeros, so no lane tests its position.
// planes: the chunk's first interval's start triple (its end triple 3 cs further), the next intervals' at steps
// of `step`. acc: planar running sum between passes; the last pass writes the packed (T, J, 3) gradient times sign.
template <int K, bool FIRST, bool LAST, typename scalar_t>
void gather_products_chunk(const scalar_t* planes, int64_t step, int64_t TJ, int64_t cs, const int64_t* shifts,
                           const scalar_t* scales, scalar_t sign, scalar_t* acc, scalar_t* out) {
#pragma omp simd
  for (int64_t n = 0; n < TJ; ++n) {
    scalar_t ax, ay, az;
    load_running_sum<FIRST>(acc, n, cs, ax, ay, az);
    for (int k = 0; k < K; ++k) {
      const scalar_t* start = planes + k * step + n;
      const scalar_t* end = planes + k * step + 3 * cs + n - shifts[k];
      ax = std::fma(scales[k], start[0] + end[0], ax);
      ay = std::fma(scales[k], start[cs] + end[cs], ay);
      az = std::fma(scales[k], start[2 * cs] + end[2 * cs], az);
    }
    store_running_sum<LAST>(ax, ay, az, sign, n, cs, acc, out);
  }
}

template <typename scalar_t>
void gather_products(const scalar_t* planes, int64_t step, int64_t TJ, int64_t cs, const int64_t* shifts,
                     const scalar_t* scales, int nI, scalar_t sign, scalar_t* acc, scalar_t* out) {
  for_each_interval_chunk(nI, [&](auto k, int c, auto first, auto last) {
    gather_products_chunk<decltype(k)::value, decltype(first)::value, decltype(last)::value>(
        planes + c * step, step, TJ, cs, shifts + c, scales + c, sign, acc, out);
  });
}

// The same for the inner operator (D = 3): one component, mG = <a, b> (summed in the order of pair_loss), its
// magnitude |mG|.
template <bool kStats, bool kUpstream, typename scalar_t>
void inner_interval_pass(const scalar_t* P, const scalar_t* G, const scalar_t* norms, int64_t n_pairs, int64_t shift,
                         int64_t cs, scalar_t* g, scalar_t& sum_magnitude, scalar_t& sum_norm_products,
                         scalar_t& raw) {
  scalar_t magnitudes = 0, norm_products = 0, loss = 0;
#pragma omp simd reduction(+ : magnitudes, norm_products, loss)
  for (int64_t n = 0; n < n_pairs; ++n) {
    const scalar_t mG = (G[n] * G[n + shift] + G[n + cs] * G[n + shift + cs]) + G[n + 2 * cs] * G[n + shift + 2 * cs];
    if (kStats) {
      magnitudes += std::fabs(mG);
      norm_products += norms[n] * norms[n + shift];
    }
    const scalar_t mP = (P[n] * P[n + shift] + P[n + cs] * P[n + shift + cs]) + P[n + 2 * cs] * P[n + shift + 2 * cs];
    const scalar_t d = mP - mG, a = std::fabs(d);
    if (kUpstream) g[n] = a > scalar_t(0) ? std::copysign(scalar_t(1), d) : scalar_t(0);
    loss += a;
  }
  sum_magnitude = magnitudes;
  sum_norm_products = norm_products;
  raw = loss;
}

// Planes per interval that sample_scaled_loss_and_grad stores: the cross operator's gradient products (start and
// end triples) for each gradient wanted, or the inner operator's one sign plane shared by both gradients.
template <int OP>
int sample_scaled_planes(bool grad_pred, bool grad_target) {
  if (OP == kCross) return 6 * (int(grad_pred) + int(grad_target));
  return grad_pred || grad_target ? 1 : 0;
}

// Cross (and inner, D = 3) operator with one den per sample and interval (normalize "none" / "sample", the
// default): pass 1 and pass 2(a) fused, one loop per interval that encodes the target's pair once for both its
// statistics (-> den) and the loss. 1 / den is known only after that loop, so the planes are unscaled (cross: the
// gradient products with sign(mP - mG); inner: the sign) and the gather applies each interval's w / den to the sum
// it gathers from them (for a NaN den, as 0 * NaN in the generic path: NaN; a frame in none of the interval's
// pairs keeps its exact 0, as in the reference: see below). Returns the sample's weighted loss; den: (nI, J) out.
template <int OP, typename scalar_t>
double sample_scaled_loss_and_grad(int64_t B, int64_t T, int64_t J, const std::vector<int>& intervals,
                                   int normalize, scalar_t eps, int reduction, scalar_t* den, scalar_t* out_dP,
                                   scalar_t* out_dG, Scratch<scalar_t>& s) {
  static_assert(OP == kCross || OP == kInner, "one den per sample: the operators with statistics");
  const int C = components<OP>(3);
  const bool grad_pred = out_dP != nullptr, grad_target = out_dG != nullptr;
  const int n_planes = sample_scaled_planes<OP>(grad_pred, grad_target);
  const int nI = static_cast<int>(intervals.size());
  const int64_t TJ = s.plane, cs = s.stride;
  const scalar_t *P = s.P(), *G = s.G();
  const bool statistics = normalize == kNormSample;
  scalar_t* norms = s.norms;
  if (statistics) {
#pragma omp simd
    for (int64_t n = 0; n < TJ; ++n) norms[n] = point_norm(G + n, 3, cs);
  }
  int64_t shifts[kMaxIntervals];
  scalar_t scales[kMaxIntervals];
  double loss = 0;
  for (int i = 0; i < nI; ++i) {
    const int tau = intervals[i];
    const int64_t shift = int64_t(tau) * J, n_pairs = TJ - shift;
    shifts[i] = shift;
    scalar_t sum_magnitude = 0, sum_norm_products = 0, raw = 0;
    scalar_t* planes = s.upstream(i, n_planes);
    auto pass = [&](auto stats, auto with_grad_pred, auto with_grad_target) {
      constexpr bool kStats = decltype(stats)::value, kGradP = decltype(with_grad_pred)::value,
                     kGradG = decltype(with_grad_target)::value;
      if constexpr (OP == kCross)
        cross_interval_pass<kStats, kGradP, kGradG>(P, G, norms, n_pairs, shift, cs, planes, sum_magnitude,
                                                    sum_norm_products, raw);
      else
        inner_interval_pass<kStats, kGradP || kGradG>(P, G, norms, n_pairs, shift, cs, planes, sum_magnitude,
                                                      sum_norm_products, raw);
    };
    auto with_statistics = [&](auto with_grad_pred, auto with_grad_target) {
      if (statistics)
        pass(std::true_type{}, with_grad_pred, with_grad_target);
      else
        pass(std::false_type{}, with_grad_pred, with_grad_target);
    };
    if (grad_pred && grad_target)
      with_statistics(std::true_type{}, std::true_type{});
    else if (grad_pred)
      with_statistics(std::true_type{}, std::false_type{});
    else if (grad_target)
      with_statistics(std::false_type{}, std::true_type{});
    else
      with_statistics(std::false_type{}, std::false_type{});
    const scalar_t d = statistics ? denominator<scalar_t>(sum_magnitude, scalar_t(n_pairs), sum_norm_products,
                                                          scalar_t(n_pairs), eps)
                                  : scalar_t(1);
    std::fill(den + i * J, den + (i + 1) * J, d);
    const scalar_t w = interval_weight<scalar_t>(reduction, nI, B, T, J, C, tau), inv_den = scalar_t(1) / d;
    scales[i] = w * inv_den;
    loss += double(w) * double(inv_den * raw);
  }
  if (!grad_pred && !grad_target) return loss;
  // A non-finite w / den (a NaN in the target's sample) would turn the exact zero that a frame in none of an
  // interval's pairs gathers into NaN, where the reference leaves that frame's gradient 0. Then (rarely) the planes
  // are scaled over the interval's pairs only, the padding and the never-written tail staying zero, and the gather
  // takes them as they are (scales of 1).
  bool finite = true;
  for (int i = 0; i < nI; ++i) finite = finite && std::isfinite(scales[i]);
  if (!finite) {
    for (int i = 0; i < nI; ++i) {
      const int64_t n_pairs = TJ - shifts[i];
      for (int c = 0; c < n_planes; ++c) {
        scalar_t* plane = s.upstream(i, n_planes) + c * cs;
        for (int64_t n = 0; n < n_pairs; ++n) plane[n] *= scales[i];
      }
      scales[i] = 1;
    }
  }
  if constexpr (OP == kCross) {
    const int64_t step = int64_t(n_planes) * cs;  // from one interval's planes to the next's
    const scalar_t* pred_planes = s.upstream(0, n_planes);
    const scalar_t* target_planes = pred_planes + (grad_pred ? 6 * cs : 0);
    if (grad_pred) gather_products(pred_planes, step, TJ, cs, shifts, scales, nI, scalar_t(1), s.dP(), out_dP);
    if (grad_target) gather_products(target_planes, step, TJ, cs, shifts, scales, nI, scalar_t(-1), s.dG(), out_dG);
  } else {
    const scalar_t* g0 = s.upstream(0, n_planes);
    if (grad_pred) gather_all_intervals<OP>(P, g0, TJ, cs, shifts, scales, nI, scalar_t(1), s.dP(), out_dP);
    if (grad_target) gather_all_intervals<OP>(G, g0, TJ, cs, shifts, scales, nI, scalar_t(-1), s.dG(), out_dG);
  }
  return loss;
}

// ---- pass 2: loss and unit gradients of one sample, written to the caller's packed layout --------------------
// out_dP / out_dG: the sample's (T, J, D) gradients, or nullptr.
// D = 3 gathers the gradient of every interval in one pass (gather_all_intervals), from one upstream plane set per
// interval; other D gather interval by interval (gather_interval_grad) from one shared set.
template <int DC>
constexpr bool kGatherAllIntervals = DC == 3;

template <int OP, int DC, bool PER_JOINT, typename scalar_t>
double sample_loss_and_grad(int64_t B, int64_t T, int64_t J, int D_runtime, const std::vector<int>& intervals,
                            int reduction, const scalar_t* den, scalar_t* out_dP, scalar_t* out_dG,
                            Scratch<scalar_t>& s) {
  constexpr bool kFused = kGatherAllIntervals<DC>;
  const int D = DC > 0 ? DC : D_runtime;
  const int C = components<OP>(D);
  const int nI = static_cast<int>(intervals.size());
  const int64_t TJ = s.plane, cs = s.stride;
  const scalar_t *P = s.P(), *G = s.G();
  scalar_t *dP = s.dP(), *dG = s.dG();
  const bool grad_pred = out_dP != nullptr, grad_target = out_dG != nullptr;
  if (!kFused) {
    for (int d = 0; d < D; ++d) {
      if (grad_pred) std::fill(dP + d * cs, dP + d * cs + TJ, scalar_t(0));
      if (grad_target) std::fill(dG + d * cs, dG + d * cs + TJ, scalar_t(0));
    }
  }
  int64_t shifts[kMaxIntervals];
  double loss = 0;
  for (int i = 0; i < nI; ++i) {
    const int tau = intervals[i];
    const int64_t shift = int64_t(tau) * J, n_pairs = TJ - shift;
    shifts[i] = shift;
    scalar_t* g = s.upstream(kFused ? i : 0, C);
    const scalar_t w = interval_weight<scalar_t>(reduction, nI, B, T, J, C, tau);
    const scalar_t* inv_den = s.inv_den;
    if (PER_JOINT) {
      scalar_t* row = s.inv_den;
      for (int64_t j = 0; j < J; ++j) row[j] = scalar_t(1) / den[i * J + j];
      for (int64_t t = 1; t < T - tau; ++t) std::memcpy(row + t * J, row, J * sizeof(scalar_t));
    }
    const scalar_t inv_den_sample = scalar_t(1) / den[i * J];

    // (a) loss and upstream gradient of every pair; with one den per sample, 1 / den scales the sum once
    scalar_t interval_loss = 0;
    if (grad_pred || grad_target) {
#pragma omp simd reduction(+ : interval_loss)
      for (int64_t n = 0; n < n_pairs; ++n) {
        const scalar_t inv = PER_JOINT ? inv_den[n] : inv_den_sample;
        const scalar_t raw = pair_loss_and_upstream<OP>(P + n, P + n + shift, G + n, G + n + shift, D, inv, w, g + n,
                                                        cs);
        interval_loss += PER_JOINT ? inv * raw : raw;
      }
    } else {  // no gradient wanted: no upstream planes to store
#pragma omp simd reduction(+ : interval_loss)
      for (int64_t n = 0; n < n_pairs; ++n) {
        const scalar_t raw = pair_loss<OP>(P + n, P + n + shift, G + n, G + n + shift, D, cs);
        interval_loss += PER_JOINT ? inv_den[n] * raw : raw;
      }
    }
    loss += double(w) * double(PER_JOINT ? interval_loss : inv_den_sample * interval_loss);

    // (b) dL/dmG = -g: the target's gradient gathers with +g and is negated when written back.
    if (!kFused) {
      if (grad_pred) gather_interval_grad<OP, DC>(P, g, TJ, cs, shift, D, dP);
      if (grad_target) gather_interval_grad<OP, DC>(G, g, TJ, cs, shift, D, dG);
    }
  }
  if (kFused) {
    const scalar_t* g0 = s.upstream(0, C);
    if (grad_pred) gather_all_intervals<OP, scalar_t>(P, g0, TJ, cs, shifts, nullptr, nI, scalar_t(1), dP, out_dP);
    if (grad_target) gather_all_intervals<OP, scalar_t>(G, g0, TJ, cs, shifts, nullptr, nI, scalar_t(-1), dG, out_dG);
  } else {
    if (grad_pred) from_planar<DC>(dP, TJ, D, scalar_t(1), out_dP, cs);
    if (grad_target) from_planar<DC>(dG, TJ, D, scalar_t(-1), out_dG, cs);
  }
  return loss;
}

// The problem's buffers, typed, and each sample's slice of them.
template <typename scalar_t>
struct SampleBuffers {
  const scalar_t *P, *G;
  scalar_t *den, *loss, *dP, *dG;
  int64_t pred_stride_b, target_stride_b, den_per_sample, sample;

  explicit SampleBuffers(const MotionLossProblem& p)
      : P(static_cast<const scalar_t*>(p.pred)), G(static_cast<const scalar_t*>(p.target)),
        den(static_cast<scalar_t*>(p.den)), loss(static_cast<scalar_t*>(p.loss)),
        dP(static_cast<scalar_t*>(p.grad_pred)), dG(static_cast<scalar_t*>(p.grad_target)),
        pred_stride_b(p.pred_stride_b), target_stride_b(p.target_stride_b),
        den_per_sample(int64_t(p.intervals.size()) * p.J), sample(p.T * p.J * p.D) {}

  const scalar_t* pred(int64_t b) const { return P + b * pred_stride_b; }
  const scalar_t* target(int64_t b) const { return G + b * target_stride_b; }
  scalar_t* den_of(int64_t b) const { return den + b * den_per_sample; }
  scalar_t* grad_pred(int64_t b) const { return dP ? dP + b * sample : nullptr; }
  scalar_t* grad_target(int64_t b) const { return dG ? dG + b * sample : nullptr; }
};

// Samples are spread over threads; more threads than samples would idle.
inline int thread_count(const MotionLossProblem& p) {
  return int(std::max<int64_t>(1, std::min<int64_t>(p.num_threads, p.B)));
}

inline int max_tau(const MotionLossProblem& p) {
  int m = 0;
  for (int tau : p.intervals) m = std::max(m, tau);
  return m;
}

// Cross and inner with D = 3 and one den per sample take sample_scaled_loss_and_grad; everything else
// sample_denominators, then sample_loss_and_grad.
template <int OP, int DC, bool PER_JOINT>
constexpr bool kSampleScaled = (OP == kCross || OP == kInner) && kGatherAllIntervals<DC> && !PER_JOINT;

// Upstream planes the scatter path stores, over all intervals.
template <int OP, int DC, bool PER_JOINT>
int scatter_upstream_planes(const MotionLossProblem& p) {
  const int nI = int(p.intervals.size());
  if (kSampleScaled<OP, DC, PER_JOINT>) return nI * sample_scaled_planes<OP>(p.grad_pred, p.grad_target);
  return components<OP>(p.D) * (kGatherAllIntervals<DC> ? nI : 1);
}

template <int OP, int DC, bool PER_JOINT, typename scalar_t>
void run_scatter(const MotionLossProblem& p) {
  const SampleBuffers<scalar_t> io(p);
  const int64_t TJ = p.T * p.J;
#pragma omp parallel num_threads(thread_count(p))
  {
    Scratch<scalar_t> s(p.T, p.J, p.D, max_tau(p), scatter_upstream_planes<OP, DC, PER_JOINT>(p));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < p.B; ++b) {
      to_planar<DC>(io.pred(b), TJ, p.D, s.P(), s.stride);
      to_planar<DC>(io.target(b), TJ, p.D, s.G(), s.stride);
      if constexpr (kSampleScaled<OP, DC, PER_JOINT>) {
        io.loss[b] = scalar_t(sample_scaled_loss_and_grad<OP>(p.B, p.T, p.J, p.intervals, p.normalize,
                                                              scalar_t(p.eps), p.reduction, io.den_of(b),
                                                              io.grad_pred(b), io.grad_target(b), s));
        continue;
      }
      sample_denominators<OP, DC>(p.T, p.J, p.D, p.intervals, p.normalize, scalar_t(p.eps), s, io.den_of(b));
      io.loss[b] = scalar_t(sample_loss_and_grad<OP, DC, PER_JOINT>(
          p.B, p.T, p.J, p.D, p.intervals, p.reduction, io.den_of(b), io.grad_pred(b), io.grad_target(b), s));
    }
  }
}

template <int OP, int DC, typename scalar_t>
void run_gather(const MotionLossProblem& p) {
  const SampleBuffers<scalar_t> io(p);
  const int nI = int(p.intervals.size());
  const int64_t TJ = p.T * p.J;
  scalar_t weight[kMaxIntervals];
  for (int i = 0; i < nI; ++i)
    weight[i] = interval_weight<scalar_t>(p.reduction, nI, p.B, p.T, p.J, components<OP>(p.D), p.intervals[i]);
#pragma omp parallel num_threads(thread_count(p))
  {
    Scratch<scalar_t> s(p.T, p.J, p.D, max_tau(p), components<OP>(p.D));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < p.B; ++b) {
      to_planar<DC>(io.target(b), TJ, p.D, s.G(), s.stride);
      sample_denominators<OP, DC>(p.T, p.J, p.D, p.intervals, p.normalize, scalar_t(p.eps), s, io.den_of(b));
      scalar_t *dP = io.grad_pred(b), *dG = io.grad_target(b);
      double sample_loss = 0;
      for (int64_t n = 0; n < TJ; ++n) {
        sample_loss += double(gather_frame_joint<OP, scalar_t, scalar_t>(
            io.pred(b), io.target(b), p.T, p.J, p.D, n / p.J, n % p.J, p.intervals.data(), nI, io.den_of(b), weight,
            dP ? dP + n * p.D : nullptr, dG ? dG + n * p.D : nullptr));
      }
      io.loss[b] = scalar_t(sample_loss);
    }
  }
}

// ---- dispatch: operator and D to compile-time constants ----------------------------------------------------
template <typename scalar_t, template <int, int, typename> class Runner>
void dispatch_op_and_d(const MotionLossProblem& p) {
  switch (p.op) {
    case kCross:
      return Runner<kCross, 3, scalar_t>::run(p);
    case kInner:
      if (p.D == 3) return Runner<kInner, 3, scalar_t>::run(p);
      if (p.D == 2) return Runner<kInner, 2, scalar_t>::run(p);
      return Runner<kInner, 0, scalar_t>::run(p);
    case kSub:
      if (p.D == 3) return Runner<kSub, 3, scalar_t>::run(p);
      if (p.D == 2) return Runner<kSub, 2, scalar_t>::run(p);
      return Runner<kSub, 0, scalar_t>::run(p);
    default:
      throw std::invalid_argument("op: unknown motion operator code");
  }
}

template <int OP, int DC, typename scalar_t>
struct ScatterRunner {
  static void run(const MotionLossProblem& p) {
    if (p.normalize == kNormJoint)
      run_scatter<OP, DC, true, scalar_t>(p);
    else
      run_scatter<OP, DC, false, scalar_t>(p);
  }
};

template <int OP, int DC, typename scalar_t>
struct GatherRunner {
  static void run(const MotionLossProblem& p) { run_gather<OP, DC, scalar_t>(p); }
};

}  // namespace

template <typename scalar_t>
void motion_loss_forward(const MotionLossProblem& p) {
  dispatch_op_and_d<scalar_t, ScatterRunner>(p);
}

template <typename scalar_t>
void motion_loss_forward_gather(const MotionLossProblem& p) {
  dispatch_op_and_d<scalar_t, GatherRunner>(p);
}

template void motion_loss_forward<float>(const MotionLossProblem&);
template void motion_loss_forward<double>(const MotionLossProblem&);
template void motion_loss_forward_gather<float>(const MotionLossProblem&);
template void motion_loss_forward_gather<double>(const MotionLossProblem&);

}  // namespace cpu
}  // namespace ugcn
