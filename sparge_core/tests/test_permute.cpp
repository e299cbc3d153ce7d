// Token permutation of Q/K/V/O: permute + unpermute is the identity, text tokens stay in place, non-causal
// attention with every block kept is unchanged by any order, and the Hilbert order raises block
// self-similarity of a smooth video-like field (the paper's Sim-q / Sim-k) above row-major and random orders.
#include <gtest/gtest.h>

#include "sparge/permute.h"
#include "sparge/token_order.h"
#include "test_util.h"

namespace sparge {
namespace {

const TokenOrder kOrders[] = {TokenOrder::kRowMajor, TokenOrder::kColumnMajor, TokenOrder::kTimeMajor,
                              TokenOrder::kRandom, TokenOrder::kHilbert};

TEST(Permute, RoundTripKeepsTextTokensInPlace) {
  const Grid3 grid{3, 5, 7};
  const int64_t text = 11, n = text + grid.size() + 4;  // text before and after the visual span
  auto gen = at::make_generator<at::CPUGeneratorImpl>(test::fresh_seed());
  const auto x = at::randn({2, 3, n, 8}, gen);
  for (auto order : kOrders) {
    const auto perm = token_permutation(grid, order, 7);
    const auto y = permute_tokens(x, perm, text);
    EXPECT_TRUE(y.narrow(2, 0, text).equal(x.narrow(2, 0, text))) << to_string(order);
    EXPECT_TRUE(y.narrow(2, n - 4, 4).equal(x.narrow(2, n - 4, 4))) << to_string(order);
    EXPECT_TRUE(y[0][0][text + 5].equal(x[0][0][text + perm[5]])) << to_string(order);
    EXPECT_TRUE(unpermute_tokens(y, perm, text).equal(x)) << to_string(order);
    // NHD layout permutes axis 1.
    const auto xn = x.transpose(1, 2).contiguous();
    EXPECT_TRUE(permute_tokens(xn, perm, text, Layout::kNHD).transpose(1, 2).equal(y)) << to_string(order);
  }
}

TEST(Permute, NonCausalAttentionIsPermutationEquivariant) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Grid3 grid{4, 9, 13};  // 468 visual tokens
  const int64_t text = 30, n = text + grid.size();
  const auto in = random_qkv(1, 4, 2, n, n, 64, seed, at::TensorOptions(at::kFloat));
  SpargeConfig cfg;
  cfg.simthreshd1 = {1.0};  // every block kept
  const auto base = spas_attention(in.q, in.k, in.v, cfg).out;
  for (auto order : kOrders) {
    const auto perm = token_permutation(grid, order, seed);
    const auto out = spas_attention(permute_tokens(in.q, perm, text), permute_tokens(in.k, perm, text),
                                    permute_tokens(in.v, perm, text), cfg)
                         .out;
    EXPECT_LT(relative_l2(unpermute_tokens(out, perm, text), base), 5e-6) << to_string(order);
  }
}

TEST(Permute, HilbertRaisesBlockSelfSimilarityOfASmoothField) {
  // A smooth random field over (T, H, W): sums of a few random plane waves per channel, as video latents are
  // locally correlated in space and time.
  const Grid3 grid{8, 24, 40};
  const int64_t d = 32;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(test::fresh_seed());
  const auto opt = at::TensorOptions(at::kDouble);
  const auto t = at::arange(grid.t, opt).view({-1, 1, 1, 1}), h = at::arange(grid.h, opt).view({1, -1, 1, 1}),
             w = at::arange(grid.w, opt).view({1, 1, -1, 1});
  auto field = at::zeros({grid.t, grid.h, grid.w, d}, opt);
  for (int wave = 0; wave < 4; ++wave) {
    const auto f = at::randn({3, d}, gen, opt) * 0.25;  // spatial frequencies per channel
    const auto phase = at::rand({d}, gen, opt) * 6.283;
    field = field + at::cos(t * f[0] + h * f[1] + w * f[2] + phase);
  }
  const auto x = field.view({1, 1, grid.size(), d});
  std::map<TokenOrder, double> sim;
  for (auto order : kOrders) {
    sim[order] = mean_block_similarity(permute_tokens(x, token_permutation(grid, order, 1)), 64);
    std::printf("[ measured ] %-12s mean block self-similarity %.4f\n", std::string(to_string(order)).c_str(),
                sim[order]);
  }
  EXPECT_GT(sim[TokenOrder::kHilbert], sim[TokenOrder::kRowMajor]);
  EXPECT_GT(sim[TokenOrder::kRowMajor], sim[TokenOrder::kRandom]);
  EXPECT_GT(sim[TokenOrder::kHilbert], sim[TokenOrder::kRandom] + 0.2);
}

TEST(Permute, RejectsABadPermutationOrSpan) {
  const auto x = at::randn({1, 1, 10, 4});
  EXPECT_THROW(permute_tokens(x, {0, 1, 1}), Error);
  EXPECT_THROW(permute_tokens(x, {0, 1, 2}, /*offset=*/8), Error);
}

}  // namespace
}  // namespace sparge
