// The fused CPU kernels of the `cpp` backend (sdfsrn_fast/backends/cpp.py loads this file with
// torch.utils.cpp_extension and ninja on first use).
//
// sdfsrn_fast::cpp_forward: every valid ray's samples through the five-layer decoder, tile by tile (a few rays,
// all their samples: activations of a tile stay in cache), the H x H layers as ATen CPU BLAS gemms into per-thread
// buffers, bias and activation applied right after each product, then the soft minimum per ray. Writes the per-sample
// SDF, the per-ray logsumexp and the silhouette, and with `surface` each ray's first crossing (docs/contract.md,
// Surface: the running sign and the previous sample suffice); nothing per sample and hidden unit leaves a tile.
// sdfsrn_fast::cpp_backward_samples: the given (kept) samples, recomputed tile by tile and backpropagated by hand;
// weight gradients accumulate in per-range partials that are summed in a fixed order (bitwise repeatable at a
// given thread count).
//
// Precision: float64 and float32 (every product in that dtype), or mixed: `compute` = BFloat16 runs the three
// H x H products with bfloat16 operands (oneDNN; outputs rounded to bfloat16 as under torch.autocast); the latent
// shares, the xyz parts, biases, activations, the output layer and the soft minimum stay float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <limits>
#include <vector>

namespace {

// Points a tile. 2048: study shape, bf16 forward+backward 1.11 s against 1.32 s at 1024 and 2.07 s at 256; float32
// within noise of each other (2-core AMD EPYC, 2026-11-28, a throwaway timing script).
constexpr int64_t tile_points() { return 2048; }

// The products go through ATen (at::mm_out on views of per-thread buffers: MKL for float32/float64, oneDNN for
// bfloat16); libtorch does not export cpublas::gemm to extensions. Inside at::parallel_for they run on one thread.
template <typename T>
at::Tensor view(T* p, int64_t rows, int64_t cols) {
  return at::from_blob(p, {rows, cols}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// The decoder's activations, numbered as sdfsrn_fast.models.ACTIVATIONS.
enum Act : int { kRelu = 0, kSoftplus = 1, kSmoothRelu = 2 };

// The activation in place on n x H pre-activations: ReLU; softplus with torch's threshold through ATen's
// vectorised kernel (a scalar log1p(exp()) per unit made a softplus decoder 9x slower than a ReLU one: a training
// batch of 10 images, 1024 rays, 32 samples, H = 128 took 3.5 s against 0.41 s, 2-core AMD EPYC, 2026-12-06); or
// smoothrelu, (x + k)^2 / (4k) on |x| < k = 2 / beta, ReLU outside (models.activation).
template <typename acc_t>
void activate(acc_t* a, int64_t n, int64_t H, Act act, acc_t beta) {
  if (act == kRelu) {
    for (int64_t i = 0; i < n * H; ++i) a[i] = a[i] > 0 ? a[i] : acc_t(0);
  } else if (act == kSoftplus) {
    at::Tensor v = view(a, n, H);
    at::softplus_out(v, v, beta, 20);
  } else {
    const acc_t k = acc_t(2) / beta, q = acc_t(0.25) / k;
    for (int64_t i = 0; i < n * H; ++i) {
      const acc_t c = std::min(std::max(a[i] + k, acc_t(0)), 2 * k);
      a[i] = c * c * q + std::max(a[i] - k, acc_t(0));
    }
  }
}

// act'(a) read off the activations h = act(a) (n x H, op dtype) into g (acc dtype): ReLU 1[h > 0]; softplus
// sigmoid(beta a) = 1 - exp(-beta h), vectorised through ATen; smoothrelu min(sqrt(h / k), 1).
template <typename op_t, typename acc_t>
void act_grad_from_output(const op_t* h, int64_t n, int64_t H, Act act, acc_t beta, acc_t* g) {
  if (act == kRelu) {
    for (int64_t i = 0; i < n * H; ++i) g[i] = acc_t(h[i]) > 0 ? acc_t(1) : acc_t(0);
  } else {
    for (int64_t i = 0; i < n * H; ++i) g[i] = acc_t(h[i]);
    if (act == kSoftplus)
      view(g, n, H).mul_(-beta).exp_().neg_().add_(1);
    else
      view(g, n, H).clamp_min_(0).mul_(beta / 2).sqrt_().clamp_max_(1);
  }
}

// Y[n, H] = X[n, H] @ W^T (W [H_out, H_in] row-major, op dtype).
template <typename op_t>
inline void linear(int64_t n, int64_t H, op_t* X, const at::Tensor& W, op_t* Y) {
  at::Tensor out = view(Y, n, H);
  at::mm_out(out, view(X, n, H), W.t());
}

// Y[n, H_in] = D[n, H_out] @ W.
template <typename op_t>
inline void linear_back(int64_t n, int64_t H, op_t* D, const at::Tensor& W, op_t* Y) {
  at::Tensor out = view(Y, n, H);
  at::mm_out(out, view(D, n, H), W);
}

// dW[H_out, H_in] (acc dtype) += D[n, H_out]^T @ X[n, H_in]; a bfloat16 product is rounded once, then added.
template <typename op_t, typename acc_t>
inline void weight_grad(int64_t n, int64_t H, op_t* D, op_t* X, at::Tensor& dW) {
  if constexpr (std::is_same_v<op_t, acc_t>) {
    at::addmm_out(dW, dW, view(D, n, H).t(), view(X, n, H));
  } else {
    dW.add_(at::mm(view(D, n, H).t(), view(X, n, H)));
  }
}

template <typename acc_t>
struct Net {
  int64_t H;
  Act act;
  acc_t beta, b4;
  const acc_t *c0, *c2, *w0p, *w2p, *b1, *b3, *w4;  // shares [B, H]; xyz columns [H, 3]; biases; output [H]
};

// Per-thread buffers of one tile.
template <typename op_t, typename acc_t>
struct Tile {
  std::vector<acc_t> px, py, pz, h3, g;  // h3: also each layer's pre-activations; g: act' of a layer (backward)
  std::vector<int64_t> shape;
  std::vector<op_t> y, x0, x1, x2, dop;  // y: each product's output
  explicit Tile(int64_t H)
      : px(tile_points()), py(tile_points()), pz(tile_points()), h3(tile_points() * H), g(tile_points() * H),
        shape(tile_points()), y(tile_points() * H), x0(tile_points() * H), x1(tile_points() * H),
        x2(tile_points() * H), dop(tile_points() * H) {}
};

// The four hidden layers at the tile's n points: x0, x1, x2 (inputs of the next layer, in op_t) and h3. Each
// layer's pre-activations are formed in h3 (acc_t), activated there, then rounded into the next layer's operand.
template <typename op_t, typename acc_t>
void decoder_tile(const Net<acc_t>& net, const at::Tensor& W1, const at::Tensor& W2h, const at::Tensor& W3,
                  int64_t n, Tile<op_t, acc_t>& t) {
  const int64_t H = net.H;
  acc_t* a = t.h3.data();
  auto to_operand = [&](std::vector<op_t>& x) {
    activate(a, n, H, net.act, net.beta);
    for (int64_t i = 0; i < n * H; ++i) x[i] = op_t(a[i]);
  };
  for (int64_t i = 0; i < n; ++i) {
    const acc_t *c0 = net.c0 + t.shape[i] * H, x = t.px[i], y = t.py[i], z = t.pz[i];
    for (int64_t c = 0; c < H; ++c) {
      const acc_t* w = net.w0p + 3 * c;
      a[i * H + c] = c0[c] + x * w[0] + y * w[1] + z * w[2];
    }
  }
  to_operand(t.x0);
  linear(n, H, t.x0.data(), W1, t.y.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < H; ++c) a[i * H + c] = acc_t(t.y[i * H + c]) + net.b1[c];
  to_operand(t.x1);
  linear(n, H, t.x1.data(), W2h, t.y.data());
  for (int64_t i = 0; i < n; ++i) {
    const acc_t *c2 = net.c2 + t.shape[i] * H, x = t.px[i], y = t.py[i], z = t.pz[i];
    for (int64_t c = 0; c < H; ++c) {
      const acc_t* w = net.w2p + 3 * c;
      a[i * H + c] = acc_t(t.y[i * H + c]) + c2[c] + x * w[0] + y * w[1] + z * w[2];
    }
  }
  to_operand(t.x2);
  linear(n, H, t.x2.data(), W3, t.y.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < H; ++c) a[i * H + c] = acc_t(t.y[i * H + c]) + net.b3[c];
  activate(a, n, H, net.act, net.beta);  // h3
}

template <typename acc_t>
Net<acc_t> make_net(const at::Tensor& c0, const at::Tensor& c2, const at::Tensor& w0p, const at::Tensor& w2p,
                    const at::Tensor& b1, const at::Tensor& b3, const at::Tensor& w4, double b4, Act act,
                    double beta) {
  return Net<acc_t>{c0.size(1), act, acc_t(beta), acc_t(b4), c0.data_ptr<acc_t>(), c2.data_ptr<acc_t>(),
                    w0p.data_ptr<acc_t>(), w2p.data_ptr<acc_t>(), b1.data_ptr<acc_t>(), b3.data_ptr<acc_t>(),
                    w4.data_ptr<acc_t>()};
}

// Contiguous ranges [begin, end) of `count` items, one per worker.
std::vector<int64_t> split(int64_t count, int64_t parts) {
  std::vector<int64_t> edges(parts + 1);
  for (int64_t p = 0; p <= parts; ++p) edges[p] = count * p / parts;
  return edges;
}

// t_k = near + (k + 0.5 [+ jitter]) (far - near) / S, in the operations of sample_points_at.
template <typename acc_t>
inline acc_t sample_t(const acc_t* N, const acc_t* F, const acc_t* J, int64_t rr, int64_t k, int64_t S) {
  acc_t kf = acc_t(k) + acc_t(0.5);
  if (J) kf = kf + J[rr];
  return N[rr] + kf * ((F[rr] - N[rr]) / acc_t(S));
}

template <typename op_t, typename acc_t>
void forward_impl(const at::Tensor& o, const at::Tensor& d, const at::Tensor& near, const at::Tensor& far,
                  const c10::optional<at::Tensor>& jitter, const at::Tensor& rays, const Net<acc_t>& net,
                  const at::Tensor& W1, const at::Tensor& W2h, const at::Tensor& W3, int64_t S, int64_t R, double tau,
                  double tau_min, at::Tensor& sdf, at::Tensor& lse, at::Tensor& sil, acc_t* T0, bool* HIT) {
  const int64_t n_rays = rays.numel(), H = net.H;
  const int64_t rays_per_tile = std::max<int64_t>(1, tile_points() / S);
  const int64_t samples_per_chunk = std::min<int64_t>(S, tile_points());
  const int64_t n_tiles = (n_rays + rays_per_tile - 1) / rays_per_tile;
  const int64_t* ray = rays.data_ptr<int64_t>();
  const acc_t *O = o.data_ptr<acc_t>(), *D = d.data_ptr<acc_t>(), *N = near.data_ptr<acc_t>(),
              *F = far.data_ptr<acc_t>(), *J = jitter.has_value() ? jitter->data_ptr<acc_t>() : nullptr;
  acc_t *SDF = sdf.data_ptr<acc_t>(), *LSE = lse.data_ptr<acc_t>(), *SIL = sil.data_ptr<acc_t>();
  const acc_t inv_tau_min = acc_t(1) / acc_t(tau_min), ratio = acc_t(tau_min) / acc_t(tau);
  at::parallel_for(0, n_tiles, 1, [&](int64_t begin, int64_t end) {
    Tile<op_t, acc_t> t(H);
    std::vector<acc_t> m(rays_per_tile), l(rays_per_tile), prev(rays_per_tile);
    std::vector<char> found(rays_per_tile);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t r0 = tile * rays_per_tile, nr = std::min(rays_per_tile, n_rays - r0);
      std::fill(m.begin(), m.end(), -std::numeric_limits<acc_t>::infinity());
      std::fill(l.begin(), l.end(), acc_t(0));
      std::fill(found.begin(), found.end(), 0);
      for (int64_t s0 = 0; s0 < S; s0 += samples_per_chunk) {  // all of S at once unless S > tile_points()
        const int64_t ns = std::min(samples_per_chunk, S - s0), n = nr * ns;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t rr = ray[r0 + i / ns], k = s0 + i % ns;
          const acc_t tt = sample_t(N, F, J, rr, k, S);
          t.px[i] = O[3 * rr] + tt * D[3 * rr];
          t.py[i] = O[3 * rr + 1] + tt * D[3 * rr + 1];
          t.pz[i] = O[3 * rr + 2] + tt * D[3 * rr + 2];
          t.shape[i] = rr / R;
        }
        decoder_tile(net, W1, W2h, W3, n, t);
        for (int64_t i = 0; i < n; ++i) {
          const acc_t* h = t.h3.data() + i * H;
          acc_t s = net.b4;
          for (int64_t c = 0; c < H; ++c) s += h[c] * net.w4[c];
          const int64_t j = i / ns, rr = ray[r0 + j], k = s0 + i % ns;
          SDF[rr * S + k] = s;
          if (T0 && !found[j] && s < 0) {  // the first negative sample: one secant step from the one before
            const acc_t tk = sample_t(N, F, J, rr, k, S);
            if (k == 0) {
              T0[rr] = tk;
            } else {
              const acc_t tp = sample_t(N, F, J, rr, k - 1, S);
              T0[rr] = tp + prev[j] * (tk - tp) / (prev[j] - s);
            }
            HIT[rr] = found[j] = 1;
          }
          prev[j] = s;
          const acc_t x = -s * inv_tau_min;  // online logsumexp of -s / tau_min
          if (x > m[j]) {
            l[j] = l[j] * std::exp(m[j] - x) + acc_t(1);
            m[j] = x;
          } else {
            l[j] += std::exp(x - m[j]);
          }
        }
      }
      for (int64_t j = 0; j < nr; ++j) {
        const int64_t rr = ray[r0 + j];
        LSE[rr] = m[j] + std::log(l[j]);
        SIL[rr] = acc_t(1) / (acc_t(1) + std::exp(-LSE[rr] * ratio));  // sigmoid(-m / tau), m = -tau_min lse
      }
    }
  });
}

// d = y act'(x) (y: the product d_next W, in t.y) at a layer that also meets the xyz columns and the latent share
// (layers 0 and 2): accumulates the share's gradient per shape into dc [B, H] and the xyz columns' into dWp [H, 3];
// with STORE keeps d in t.dop as the operand of the next product.
template <bool STORE, typename op_t, typename acc_t>
void share_grads(const Net<acc_t>& net, int64_t m, const std::vector<op_t>& x, Tile<op_t, acc_t>& t, acc_t* dc,
                 acc_t* dWp) {
  const int64_t H = net.H;
  act_grad_from_output(x.data(), m, H, net.act, net.beta, t.g.data());
  for (int64_t i = 0; i < m; ++i) {
    acc_t* dcs = dc + t.shape[i] * H;
    for (int64_t c = 0; c < H; ++c) {
      const acc_t dv = acc_t(t.y[i * H + c]) * t.g[i * H + c];
      if (STORE) t.dop[i * H + c] = op_t(dv);
      dcs[c] += dv;
      dWp[3 * c] += dv * t.px[i];
      dWp[3 * c + 1] += dv * t.py[i];
      dWp[3 * c + 2] += dv * t.pz[i];
    }
  }
}

struct Grads {
  at::Tensor dc0, dc2, dW0p, dW1, db1, dW2h, dW2p, dW3, db3, dW4, db4;
};

template <typename op_t, typename acc_t>
Grads backward_impl(const at::Tensor& o, const at::Tensor& d, const at::Tensor& near, const at::Tensor& far,
                    const at::Tensor& rays, const at::Tensor& koff, const at::Tensor& g, const Net<acc_t>& net,
                    const at::Tensor& W1, const at::Tensor& W2h, const at::Tensor& W3, int64_t S, int64_t R,
                    int64_t B) {
  const int64_t n = rays.numel(), H = net.H;
  const int64_t n_tiles = (n + tile_points() - 1) / tile_points();
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_tiles));
  const auto edges = split(n_tiles, parts);
  const auto opts = o.options();
  // one partial per range, summed in range order below: the same sums for the same thread count
  auto P = [&](std::initializer_list<int64_t> shape) {
    std::vector<int64_t> full{parts};
    full.insert(full.end(), shape);
    return at::zeros(full, opts);
  };
  at::Tensor dc0 = P({B, H}), dc2 = P({B, H}), dW0p = P({H, 3}), dW1 = P({H, H}), db1 = P({H}), dW2h = P({H, H}),
             dW2p = P({H, 3}), dW3 = P({H, H}), db3 = P({H}), dW4 = P({H}), db4 = P({});
  const int64_t* ray = rays.data_ptr<int64_t>();
  const acc_t *O = o.data_ptr<acc_t>(), *D = d.data_ptr<acc_t>(), *N = near.data_ptr<acc_t>(),
              *F = far.data_ptr<acc_t>(), *K = koff.data_ptr<acc_t>(), *G = g.data_ptr<acc_t>();
  at::parallel_for(0, parts, 1, [&](int64_t pbegin, int64_t pend) {
    Tile<op_t, acc_t> t(H);
    for (int64_t part = pbegin; part < pend; ++part) {
      at::Tensor tW1 = dW1[part], tW2h = dW2h[part], tW3 = dW3[part];
      acc_t *pdc0 = dc0[part].data_ptr<acc_t>(), *pdc2 = dc2[part].data_ptr<acc_t>(),
            *pdW0p = dW0p[part].data_ptr<acc_t>(), *pdb1 = db1[part].data_ptr<acc_t>(),
            *pdW2p = dW2p[part].data_ptr<acc_t>(), *pdb3 = db3[part].data_ptr<acc_t>(),
            *pdW4 = dW4[part].data_ptr<acc_t>(), *pdb4 = db4[part].data_ptr<acc_t>();
      for (int64_t tile = edges[part]; tile < edges[part + 1]; ++tile) {
        const int64_t i0 = tile * tile_points(), m = std::min(tile_points(), n - i0);
        for (int64_t i = 0; i < m; ++i) {
          const int64_t rr = ray[i0 + i];
          const acc_t tt = N[rr] + K[i0 + i] * ((F[rr] - N[rr]) / acc_t(S));
          t.px[i] = O[3 * rr] + tt * D[3 * rr];
          t.py[i] = O[3 * rr + 1] + tt * D[3 * rr + 1];
          t.pz[i] = O[3 * rr + 2] + tt * D[3 * rr + 2];
          t.shape[i] = rr / R;
        }
        decoder_tile(net, W1, W2h, W3, m, t);
        // output layer and d3 = g w4 act'(h3)
        act_grad_from_output(t.h3.data(), m, H, net.act, net.beta, t.g.data());
        for (int64_t i = 0; i < m; ++i) {
          const acc_t gi = G[i0 + i];
          *pdb4 += gi;
          for (int64_t c = 0; c < H; ++c) {
            pdW4[c] += gi * t.h3[i * H + c];
            const acc_t dv = gi * net.w4[c] * t.g[i * H + c];
            t.dop[i * H + c] = op_t(dv);
            pdb3[c] += dv;
          }
        }
        weight_grad<op_t, acc_t>(m, H, t.dop.data(), t.x2.data(), tW3);
        // d2 = (d3 W3) act'(h2): also meets the xyz columns and the latent share
        linear_back(m, H, t.dop.data(), W3, t.y.data());
        share_grads<true>(net, m, t.x2, t, pdc2, pdW2p);
        weight_grad<op_t, acc_t>(m, H, t.dop.data(), t.x1.data(), tW2h);
        // d1 = (d2 W2h) act'(h1)
        linear_back(m, H, t.dop.data(), W2h, t.y.data());
        act_grad_from_output(t.x1.data(), m, H, net.act, net.beta, t.g.data());
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < H; ++c) {
            const acc_t dv = acc_t(t.y[i * H + c]) * t.g[i * H + c];
            t.dop[i * H + c] = op_t(dv);
            pdb1[c] += dv;
          }
        weight_grad<op_t, acc_t>(m, H, t.dop.data(), t.x0.data(), tW1);
        // d0 = (d1 W1) act'(h0)
        linear_back(m, H, t.dop.data(), W1, t.y.data());
        share_grads<false>(net, m, t.x0, t, pdc0, pdW0p);
      }
    }
  });
  auto total = [](const at::Tensor& p) {  // partials summed in range order
    at::Tensor out = p[0].clone();
    for (int64_t i = 1; i < p.size(0); ++i) out.add_(p[i]);
    return out;
  };
  return Grads{total(dc0), total(dc2), total(dW0p), total(dW1), total(db1), total(dW2h),
               total(dW2p), total(dW3), total(db3), total(dW4), total(db4)};
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "cpp backend: `", name, "` must be a CPU tensor, got ", t.device());
}

Act activation_code(c10::string_view activation) {
  TORCH_CHECK(activation == "relu" || activation == "softplus" || activation == "smoothrelu",
              "cpp backend: activation must be relu, softplus or smoothrelu, got ", activation);
  return activation == "relu" ? kRelu : activation == "softplus" ? kSoftplus : kSmoothRelu;
}

// Weights of the kernels: H x H matrices in op dtype, everything else in the accumulator dtype, contiguous.
struct Mats {
  at::Tensor w1, w2h, w3;
};

Mats op_mats(const at::Tensor& w1, const at::Tensor& w2h, const at::Tensor& w3, bool bf16) {
  // detached: the products run on the pool's threads, which do not inherit the caller's below-autograd dispatch state
  auto conv = [&](const at::Tensor& w) { return (bf16 ? w.to(at::kBFloat16) : w).contiguous().detach(); };
  return Mats{conv(w1), conv(w2h), conv(w3)};
}

// Calls f with a null pointer of the products' dtype: bfloat16 (float32 accumulators only) or acc_t.
template <typename acc_t, typename F>
void with_op_type(bool bf16, F&& f) {
  if constexpr (std::is_same_v<acc_t, float>) {
    if (bf16) {
      f(static_cast<at::BFloat16*>(nullptr));
      return;
    }
  }
  f(static_cast<acc_t*>(nullptr));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> cpp_forward(
    const at::Tensor& origins, const at::Tensor& directions, const at::Tensor& near, const at::Tensor& far,
    const c10::optional<at::Tensor>& jitter, const at::Tensor& rays, const at::Tensor& c0, const at::Tensor& c2,
    const at::Tensor& w0p, const at::Tensor& w2p, const at::Tensor& w1, const at::Tensor& b1,
    const at::Tensor& w2h, const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w4, double b4,
    int64_t num_samples, int64_t rays_per_shape, double tau, double tau_min, c10::string_view activation,
    double beta, bool bf16, bool surface) {
  check_cpu(origins, "origins");
  const auto dtype = origins.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "cpp backend: float32 or float64 rays, got ", dtype);
  TORCH_CHECK(!bf16 || dtype == at::kFloat, "cpp backend: bfloat16 products need float32 inputs");
  const int64_t BR = near.numel(), S = num_samples;
  auto c = [](const at::Tensor& t) { return t.contiguous(); };
  at::Tensor o = c(origins), d = c(directions), nr = c(near), fr = c(far), rs = rays.to(at::kLong).contiguous();
  c10::optional<at::Tensor> jit = jitter.has_value() ? c10::optional<at::Tensor>(c(*jitter)) : c10::nullopt;
  at::Tensor sdf = at::zeros({BR, S}, origins.options()), lse = at::zeros({BR}, origins.options()),
             sil = at::zeros({BR}, origins.options()), t0 = at::zeros({surface ? BR : 0}, origins.options()),
             hit = at::zeros({surface ? BR : 0}, origins.options().dtype(at::kBool));
  at::Tensor C0 = c(c0), C2 = c(c2), W0p = c(w0p), W2p = c(w2p), B1 = c(b1), B3 = c(b3), W4 = c(w4);
  const Act act = activation_code(activation);
  Mats mats = op_mats(w1, w2h, w3, bf16);
  AT_DISPATCH_FLOATING_TYPES(dtype, "cpp_forward", [&] {
    auto net = make_net<scalar_t>(C0, C2, W0p, W2p, B1, B3, W4, b4, act, beta);
    with_op_type<scalar_t>(bf16, [&](auto* tag) {
      using op_t = std::remove_pointer_t<decltype(tag)>;
      forward_impl<op_t, scalar_t>(o, d, nr, fr, jit, rs, net, mats.w1, mats.w2h, mats.w3, S, rays_per_shape, tau,
                                   tau_min, sdf, lse, sil, surface ? t0.data_ptr<scalar_t>() : nullptr,
                                   surface ? hit.data_ptr<bool>() : nullptr);
    });
  });
  return {sil, sdf, lse, t0, hit};
}

std::vector<at::Tensor> cpp_backward_samples(
    const at::Tensor& origins, const at::Tensor& directions, const at::Tensor& near, const at::Tensor& far,
    const at::Tensor& rays, const at::Tensor& koff, const at::Tensor& g, const at::Tensor& c0,
    const at::Tensor& c2, const at::Tensor& w0p, const at::Tensor& w2p, const at::Tensor& w1,
    const at::Tensor& b1, const at::Tensor& w2h, const at::Tensor& w3, const at::Tensor& b3,
    const at::Tensor& w4, int64_t num_samples, int64_t rays_per_shape, c10::string_view activation, double beta,
    bool bf16) {
  check_cpu(origins, "origins");
  const auto dtype = origins.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "cpp backend: float32 or float64 rays, got ", dtype);
  auto c = [](const at::Tensor& t) { return t.contiguous(); };
  at::Tensor o = c(origins), d = c(directions), nr = c(near), fr = c(far), rs = rays.to(at::kLong).contiguous(),
             K = c(koff), G = c(g);
  at::Tensor C0 = c(c0), C2 = c(c2), W0p = c(w0p), W2p = c(w2p), B1 = c(b1), B3 = c(b3), W4 = c(w4);
  const Act act = activation_code(activation);
  Mats mats = op_mats(w1, w2h, w3, bf16);
  const int64_t B = c0.size(0);
  Grads r;
  AT_DISPATCH_FLOATING_TYPES(dtype, "cpp_backward_samples", [&] {
    auto net = make_net<scalar_t>(C0, C2, W0p, W2p, B1, B3, W4, 0.0, act, beta);
    with_op_type<scalar_t>(bf16, [&](auto* tag) {
      using op_t = std::remove_pointer_t<decltype(tag)>;
      r = backward_impl<op_t, scalar_t>(o, d, nr, fr, rs, K, G, net, mats.w1, mats.w2h, mats.w3, num_samples,
                                        rays_per_shape, B);
    });
  });
  return {r.dc0, r.dc2, r.dW0p, r.dW1, r.db1, r.dW2h, r.dW2p, r.dW3, r.db3, r.dW4, r.db4};
}

}  // namespace

// The Python custom ops (sdfsrn_fast::compiled_render ...) share this namespace: a fragment, not a library.
TORCH_LIBRARY_FRAGMENT(sdfsrn_fast, m) {
  m.def("cpp_forward(Tensor origins, Tensor directions, Tensor near, Tensor far, Tensor? jitter, Tensor rays, "
        "Tensor c0, Tensor c2, Tensor w0p, Tensor w2p, Tensor w1, Tensor b1, Tensor w2h, Tensor w3, Tensor b3, "
        "Tensor w4, float b4, int num_samples, int rays_per_shape, float tau, float tau_min, str activation, "
        "float beta, bool bf16, bool surface) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("cpp_backward_samples(Tensor origins, Tensor directions, Tensor near, Tensor far, Tensor rays, "
        "Tensor koff, Tensor g, Tensor c0, Tensor c2, Tensor w0p, Tensor w2p, Tensor w1, Tensor b1, Tensor w2h, "
        "Tensor w3, Tensor b3, Tensor w4, int num_samples, int rays_per_shape, str activation, float beta, "
        "bool bf16) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(sdfsrn_fast, CPU, m) {
  m.impl("cpp_forward", &cpp_forward);
  m.impl("cpp_backward_samples", &cpp_backward_samples);
}
