// Per-element math of the motion loss (SPEC §1), shared by the CPU kernels (csrc/cpu) and the CUDA kernels
// (csrc/cuda): the math the CPU tests cover is the math the GPU runs.
//
// Vocabulary. A "frame-joint" is one point x[b, t, j, 0:D]; frames of one sample are packed (T, J, D) so the
// frame-joint n = t * J + j sits at x + n * D. A "pair" at interval tau is (a, b) = (x_t, x_{t+tau}), i.e. the
// frame-joints n and n + tau * J. Encodings have C components: sub D, inner 1, cross 3.
//
// Nothing here checks its arguments: the Python layer validated them before any kernel runs.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define UGCN_HD __host__ __device__ __forceinline__
#else
#define UGCN_HD inline __attribute__((always_inline))
#endif

namespace ugcn {

enum MotionOp : int { kSub = 0, kInner = 1, kCross = 2 };
enum Normalize : int { kNormNone = 0, kNormSample = 1, kNormJoint = 2 };
enum Reduction : int { kMean = 0, kSum = 1, kNone = 2 };

// Upper bound on D for the sub / inner operators, so per-thread scratch lives in registers on the GPU.
constexpr int kMaxD = 16;
// Upper bound on the number of intervals (one den per interval per frame-joint is cached per sample).
constexpr int kMaxIntervals = 64;

// Every point / encoding argument below is read as p[k * cs], k the component: cs = 1 for the packed (T, J, D)
// layout (CUDA, gather form), cs = T * J for the CPU's per-sample planar copy, where each pass is unit-stride.

// ---- 3-vectors by value: the cross operator's math ---------------------------------------------------------
// Everything the cross operator computes goes through these, by value: inside a vectorised loop a value stays in
// registers, whereas a per-lane array or an address-taken local is privatised through memory.
template <typename acc_t>
struct Vec3 {
  acc_t x, y, z;
};

template <typename acc_t>
UGCN_HD Vec3<acc_t> load3(const acc_t* p, int64_t cs) {
  return {p[0], p[cs], p[2 * cs]};
}

template <typename acc_t>
UGCN_HD Vec3<acc_t> cross3(const Vec3<acc_t>& a, const Vec3<acc_t>& b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

template <typename acc_t>
UGCN_HD void add3(acc_t* p, int64_t cs, const Vec3<acc_t>& v) {
  p[0] += v.x;
  p[cs] += v.y;
  p[2 * cs] += v.z;
}

// ---- encoding m(a, b) -------------------------------------------------------------------------------
template <int OP, typename acc_t>
UGCN_HD void encode(const acc_t* a, const acc_t* b, int D, acc_t* m, int64_t cs = 1) {
  if (OP == kCross) {
    const Vec3<acc_t> c = cross3(load3(a, cs), load3(b, cs));
    m[0] = c.x;
    m[cs] = c.y;
    m[2 * cs] = c.z;
  } else if (OP == kInner) {
    acc_t s = 0;
    for (int d = 0; d < D; ++d) s += a[d * cs] * b[d * cs];
    m[0] = s;
  } else {
    for (int d = 0; d < D; ++d) m[d * cs] = a[d * cs] - b[d * cs];
  }
}

template <int OP>
UGCN_HD int components(int D) {
  return OP == kCross ? 3 : (OP == kInner ? 1 : D);
}

// Magnitude of the encoding of (a, b), whose mean over pairs is mu: ||a x b||_2 for cross, |<a, b>| for inner.
template <int OP, typename acc_t>
UGCN_HD acc_t pair_encoding_magnitude(const acc_t* a, const acc_t* b, int D, int64_t cs = 1) {
  if (OP == kCross) {
    const Vec3<acc_t> m = cross3(load3(a, cs), load3(b, cs));
    return std::sqrt(m.x * m.x + m.y * m.y + m.z * m.z);
  }
  acc_t m = 0;
  for (int d = 0; d < D; ++d) m += a[d * cs] * b[d * cs];
  return std::fabs(m);
}

// Magnitude of a stored encoding m (components cs apart).
template <int OP, typename acc_t>
UGCN_HD acc_t encoding_magnitude(const acc_t* m, int64_t cs = 1) {
  if (OP == kCross) return std::sqrt(m[0] * m[0] + m[cs] * m[cs] + m[2 * cs] * m[2 * cs]);
  return std::fabs(m[0]);
}

template <typename acc_t>
UGCN_HD acc_t point_norm(const acc_t* x, int D, int64_t cs = 1) {
  acc_t s = 0;
  for (int d = 0; d < D; ++d) s += x[d * cs] * x[d * cs];
  return std::sqrt(s);
}

// den = mu + eps * s from the sums over the terms that define the two means; an all-zero target gives 1.
template <typename acc_t>
UGCN_HD acc_t denominator(acc_t sum_magnitude, acc_t n_mu_terms, acc_t sum_norm_products, acc_t n_s_terms,
                          acc_t eps) {
  acc_t den = sum_magnitude / n_mu_terms + eps * (sum_norm_products / n_s_terms);
  return den == acc_t(0) ? acc_t(1) : den;
}

// ---- backward of one pair: upstream g -> (da, db), SPEC §1 ---------------------------------------------------
// cross: da = b x g, db = g x a;  inner: da = g b, db = g a;  sub: da = g, db = -g.
template <int OP, typename acc_t>
UGCN_HD void accumulate_grad_start(const acc_t* b, const acc_t* g, int D, acc_t* da, int64_t cs = 1) {
  if (OP == kCross) {
    add3(da, cs, cross3(load3(b, cs), load3(g, cs)));
  } else if (OP == kInner) {
    for (int d = 0; d < D; ++d) da[d * cs] += g[0] * b[d * cs];
  } else {
    for (int d = 0; d < D; ++d) da[d * cs] += g[d * cs];
  }
}

template <int OP, typename acc_t>
UGCN_HD void accumulate_grad_end(const acc_t* a, const acc_t* g, int D, acc_t* db, int64_t cs = 1) {
  if (OP == kCross) {
    add3(db, cs, cross3(load3(g, cs), load3(a, cs)));
  } else if (OP == kInner) {
    for (int d = 0; d < D; ++d) db[d * cs] += g[0] * a[d * cs];
  } else {
    for (int d = 0; d < D; ++d) db[d * cs] -= g[d * cs];
  }
}

// ---- one pair, loss and the upstream gradient ---------------------------------------------------------------
// For one encoding component: |mP - mG| and the upstream gradient sign(mP - mG) * scale, scale = w / den > 0
// (so the sign of the normalised difference is that of mP - mG; the caller applies 1 / den to the loss once per
// run of pairs that share it).
// - The subgradient of |d| is torch's abs backward: sign(d) with sign(0) = sign(NaN) = 0, so NaN / Inf in the
//   inputs reach the losses and gradients exactly where they do through the reference; "0 * scale" keeps a NaN
//   den (a NaN in the target's sample) poisoning the gradient, as torch's 0 / NaN does.
// - (mP - mG) rather than mP / den - mG / den: with FMA contraction the latter is not exactly 0 when mP == mG,
//   and pred == target must give a zero loss and a zero subgradient, as in the reference.
template <typename acc_t>
struct Upstream {
  acc_t magnitude, g;
};

template <typename acc_t>
UGCN_HD Upstream<acc_t> component_upstream(acc_t mP, acc_t mG, acc_t scale) {
  const acc_t diff = mP - mG;
  const acc_t magnitude = std::fabs(diff);
  return {magnitude, magnitude > acc_t(0) ? std::copysign(scale, diff) : acc_t(0) * scale};
}

// Encodes the pair for pred and target, returns sum_c |mP - mG| and writes gP[c] = dL/dmP (dL/dmG is -gP);
// inv_den = 1 / den, w the reduction weight of this interval.
template <int OP, typename acc_t>
UGCN_HD acc_t pair_loss_and_upstream(const acc_t* aP, const acc_t* bP, const acc_t* aG, const acc_t* bG, int D,
                                     acc_t inv_den, acc_t w, acc_t* gP, int64_t cs = 1) {
  const acc_t scale = w * inv_den;
  if (OP == kCross) {
    const Vec3<acc_t> mP = cross3(load3(aP, cs), load3(bP, cs)), mG = cross3(load3(aG, cs), load3(bG, cs));
    const Upstream<acc_t> x = component_upstream(mP.x, mG.x, scale);
    const Upstream<acc_t> y = component_upstream(mP.y, mG.y, scale);
    const Upstream<acc_t> z = component_upstream(mP.z, mG.z, scale);
    gP[0] = x.g;
    gP[cs] = y.g;
    gP[2 * cs] = z.g;
    return x.magnitude + y.magnitude + z.magnitude;
  }
  if (OP == kInner) {
    acc_t mP = 0, mG = 0;
    for (int d = 0; d < D; ++d) {
      mP += aP[d * cs] * bP[d * cs];
      mG += aG[d * cs] * bG[d * cs];
    }
    const Upstream<acc_t> u = component_upstream(mP, mG, scale);
    gP[0] = u.g;
    return u.magnitude;
  }
  acc_t loss = 0;
  for (int d = 0; d < D; ++d) {
    const Upstream<acc_t> u = component_upstream(aP[d * cs] - bP[d * cs], aG[d * cs] - bG[d * cs], scale);
    gP[d * cs] = u.g;
    loss += u.magnitude;
  }
  return loss;
}

// The pair's sum_c |mP - mG| alone, the same values as pair_loss_and_upstream's: a forward that needs no gradient
// stores no upstream.
template <int OP, typename acc_t>
UGCN_HD acc_t pair_loss(const acc_t* aP, const acc_t* bP, const acc_t* aG, const acc_t* bG, int D, int64_t cs = 1) {
  if (OP == kCross) {
    const Vec3<acc_t> mP = cross3(load3(aP, cs), load3(bP, cs)), mG = cross3(load3(aG, cs), load3(bG, cs));
    return std::fabs(mP.x - mG.x) + std::fabs(mP.y - mG.y) + std::fabs(mP.z - mG.z);
  }
  if (OP == kInner) {
    acc_t mP = 0, mG = 0;
    for (int d = 0; d < D; ++d) {
      mP += aP[d * cs] * bP[d * cs];
      mG += aG[d * cs] * bG[d * cs];
    }
    return std::fabs(mP - mG);
  }
  acc_t loss = 0;
  for (int d = 0; d < D; ++d) loss += std::fabs((aP[d * cs] - bP[d * cs]) - (aG[d * cs] - bG[d * cs]));
  return loss;
}

// Reduction weight of interval tau: dL/d|d| for every element of L_tau's sum (SPEC §1, L = mean over tau).
template <typename acc_t>
UGCN_HD acc_t interval_weight(int reduction, int n_intervals, int64_t B, int64_t T, int64_t J, int C, int tau) {
  const acc_t per_sample_count = acc_t(T - tau) * acc_t(J) * acc_t(C);
  if (reduction == kSum) return acc_t(1) / acc_t(n_intervals);
  if (reduction == kMean) return acc_t(1) / (acc_t(n_intervals) * acc_t(B) * per_sample_count);
  return acc_t(1) / (acc_t(n_intervals) * per_sample_count);  // kNone: per-sample mean
}

// ---- gather form: everything that lands on one frame-joint ---------------------------------------------------
// For frame-joint (t, j) of one sample, visits its pairs as start (t, t + tau) and as end (t - tau, t) for every
// interval and gathers its own gradient, so a kernel that runs one thread per frame-joint needs no atomics.
// P, G: the sample's packed (T, J, D) pred / target; den: (n_intervals, J) denominators of this sample;
// weight: (n_intervals,) reduction weights. Returns the weighted loss sum_tau weight * sum_c |m̂P - m̂G| of the
// pairs that START at (t, j), so each pair is counted once and a sample's loss is the plain sum over its
// frame-joints. dP / dG (D values each) receive the gradients when non-null.
template <int OP, typename scalar_t, typename acc_t>
UGCN_HD acc_t gather_frame_joint(const scalar_t* P, const scalar_t* G, int64_t T, int64_t J, int D, int64_t t,
                                 int64_t j, const int* intervals, int n_intervals, const acc_t* den,
                                 const acc_t* weight, acc_t* dP, acc_t* dG) {
  acc_t here_P[kMaxD], here_G[kMaxD], other_P[kMaxD], other_G[kMaxD], g[kMaxD > 3 ? kMaxD : 3];
  const int64_t n = t * J + j;
  for (int d = 0; d < D; ++d) {
    here_P[d] = acc_t(P[n * D + d]);
    here_G[d] = acc_t(G[n * D + d]);
    if (dP) dP[d] = 0;
    if (dG) dG[d] = 0;
  }
  const int C = components<OP>(D);
  acc_t loss = 0;
  for (int i = 0; i < n_intervals; ++i) {
    const int64_t tau = intervals[i];
    const acc_t inv_den = acc_t(1) / den[i * J + j];
    if (t + tau < T) {  // (t, j) starts the pair (t, t + tau)
      const int64_t m = n + tau * J;
      for (int d = 0; d < D; ++d) {
        other_P[d] = acc_t(P[m * D + d]);
        other_G[d] = acc_t(G[m * D + d]);
      }
      loss += weight[i] * inv_den * pair_loss_and_upstream<OP>(here_P, other_P, here_G, other_G, D, inv_den, weight[i], g);
      if (dP) accumulate_grad_start<OP>(other_P, g, D, dP);
      if (dG) {
        for (int c = 0; c < C; ++c) g[c] = -g[c];
        accumulate_grad_start<OP>(other_G, g, D, dG);
      }
    }
    if (t - tau >= 0) {  // (t, j) ends the pair (t - tau, t)
      const int64_t m = n - tau * J;
      for (int d = 0; d < D; ++d) {
        other_P[d] = acc_t(P[m * D + d]);
        other_G[d] = acc_t(G[m * D + d]);
      }
      pair_loss_and_upstream<OP>(other_P, here_P, other_G, here_G, D, inv_den, weight[i], g);
      if (dP) accumulate_grad_end<OP>(other_P, g, D, dP);
      if (dG) {
        for (int c = 0; c < C; ++c) g[c] = -g[c];
        accumulate_grad_end<OP>(other_G, g, D, dG);
      }
    }
  }
  return loss;
}

}  // namespace ugcn
