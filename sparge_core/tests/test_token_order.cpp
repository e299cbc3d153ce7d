// Tests of the token orders (sparge/token_order.h): permutation contracts of every order; the generalized
// Hilbert curve's neighbour steps over every small 2D and 3D size and some video-latent sizes, its locality
// against row-major and its equality with the classic Hilbert curve on powers of two; argument errors.
#include "sparge/token_order.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparge {
namespace {

constexpr int64_t kExhaustive2DMax = 40;  // every (1, h, w) with h, w in [1, 40]
constexpr int64_t kExhaustive3DMax = 12;  // every (t, h, w) with each dim in [1, 12]

using Coord = std::array<int64_t, 3>;  // (t, h, w)

// Row-major linear index of grid -> its (t, h, w).
Coord coord_of(const Grid3& grid, int64_t index) {
  return {index / (grid.h * grid.w), index / grid.w % grid.h, index % grid.w};
}

// perm of a grid's order: a bijection onto [0, grid.size()) whose inverse undoes it.
::testing::AssertionResult is_permutation_of(const Grid3& grid, const std::vector<int64_t>& perm) {
  const int64_t n = grid.size();
  if (static_cast<int64_t>(perm.size()) != n) {
    return ::testing::AssertionFailure() << "size " << perm.size() << " != " << n;
  }
  std::vector<char> seen(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = perm[static_cast<size_t>(i)];
    if (v < 0 || v >= n || seen[static_cast<size_t>(v)]) {
      return ::testing::AssertionFailure() << "perm[" << i << "] = " << v << " out of range or repeated";
    }
    seen[static_cast<size_t>(v)] = 1;
  }
  const std::vector<int64_t> inv = invert_permutation(perm);
  for (int64_t i = 0; i < n; ++i) {
    if (perm[static_cast<size_t>(inv[static_cast<size_t>(i)])] != i) {
      return ::testing::AssertionFailure() << "perm[inv[" << i << "]] != " << i;
    }
    if (inv[static_cast<size_t>(perm[static_cast<size_t>(i)])] != i) {
      return ::testing::AssertionFailure() << "inv[perm[" << i << "]] != " << i;
    }
  }
  return ::testing::AssertionSuccess();
}

// hilbert_order(grid) is a permutation whose consecutive pairs are grid neighbours (|dt| + |dh| + |dw| == 1).
::testing::AssertionResult is_neighbour_path(const Grid3& grid) {
  const std::vector<int64_t> perm = hilbert_order(grid);
  if (auto r = is_permutation_of(grid, perm); !r) {
    return r << " for grid (" << grid.t << ", " << grid.h << ", " << grid.w << ")";
  }
  for (size_t i = 1; i < perm.size(); ++i) {
    const Coord p = coord_of(grid, perm[i - 1]), q = coord_of(grid, perm[i]);
    const int64_t dist = std::llabs(p[0] - q[0]) + std::llabs(p[1] - q[1]) + std::llabs(p[2] - q[2]);
    if (dist != 1) {
      return ::testing::AssertionFailure()
             << "grid (" << grid.t << ", " << grid.h << ", " << grid.w << "): positions " << i - 1 << ", "
             << i << " at distance " << dist;
    }
  }
  return ::testing::AssertionSuccess();
}

// Bounding box (lo, hi inclusive) of the tokens perm[start, start + count).
std::pair<Coord, Coord> bounding_box(const Grid3& grid, const std::vector<int64_t>& perm, int64_t start,
                                     int64_t count) {
  Coord lo = coord_of(grid, perm[static_cast<size_t>(start)]), hi = lo;
  for (int64_t i = start + 1; i < start + count; ++i) {
    const Coord c = coord_of(grid, perm[static_cast<size_t>(i)]);
    for (size_t d = 0; d < 3; ++d) {
      lo[d] = std::min(lo[d], c[d]);
      hi[d] = std::max(hi[d], c[d]);
    }
  }
  return {lo, hi};
}

// Locality of an order over windows of `window` consecutive positions (full windows only).
struct Locality {
  double mean_extent = 0;        // aligned windows: mean of the sum of the bounding-box sides
  double max_extent = 0;         // aligned windows: largest sum of the bounding-box sides
  double mean_volume = 0;        // aligned windows: mean bounding-box volume
  double mean_slide_volume = 0;  // every window start: mean bounding-box volume
};

Locality locality(const Grid3& grid, const std::vector<int64_t>& perm, int64_t window) {
  const auto n = static_cast<int64_t>(perm.size());
  Locality out;
  int64_t aligned = 0, sliding = 0;
  for (int64_t start = 0; start + window <= n; ++start) {
    const auto [lo, hi] = bounding_box(grid, perm, start, window);
    const int64_t dt = hi[0] - lo[0] + 1, dh = hi[1] - lo[1] + 1, dw = hi[2] - lo[2] + 1;
    const auto volume = static_cast<double>(dt * dh * dw);
    out.mean_slide_volume += volume;
    ++sliding;
    if (start % window == 0) {
      const auto extent = static_cast<double>(dt + dh + dw);
      out.mean_extent += extent;
      out.max_extent = std::max(out.max_extent, extent);
      out.mean_volume += volume;
      ++aligned;
    }
  }
  out.mean_extent /= static_cast<double>(aligned);
  out.mean_volume /= static_cast<double>(aligned);
  out.mean_slide_volume /= static_cast<double>(sliding);
  return out;
}

// Runs f, which must throw std::invalid_argument; returns its message (or a marker when it did not throw).
template <typename F>
std::string invalid_argument_message(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "<no exception>";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- Hilbert: neighbour steps and bijection ---------------------------------------------------------------

TEST(HilbertOrder, EveryImageSizeUpTo40IsANeighbourPath) {
  for (int64_t h = 1; h <= kExhaustive2DMax; ++h) {
    for (int64_t w = 1; w <= kExhaustive2DMax; ++w) ASSERT_TRUE(is_neighbour_path({1, h, w}));
  }
}

TEST(HilbertOrder, EveryVideoSizeUpTo12IsANeighbourPath) {
  for (int64_t t = 1; t <= kExhaustive3DMax; ++t) {
    for (int64_t h = 1; h <= kExhaustive3DMax; ++h) {
      for (int64_t w = 1; w <= kExhaustive3DMax; ++w) ASSERT_TRUE(is_neighbour_path({t, h, w}));
    }
  }
}

TEST(HilbertOrder, LargeAndLopsidedGridsAreNeighbourPaths) {
  const std::vector<Grid3> grids = {
      {13, 30, 45},  // CogVideoX latents
      {1, 64, 64},  {1, 45, 80}, {16, 48, 80}, {21, 30, 45}, {2, 45, 45},  {13, 45, 45}, {31, 31, 31},
      {1, 4, 45},   {1, 2, 81},  {3, 1, 77},   {1, 1, 1000}, {1000, 1, 1}, {1, 997, 1},  {5, 2, 99},
  };
  for (const Grid3& g : grids) EXPECT_TRUE(is_neighbour_path(g));
}

TEST(HilbertOrder, SingleTokenAndLinesAreTrivial) {
  EXPECT_EQ(hilbert_order({1, 1, 1}), std::vector<int64_t>{0});
  EXPECT_EQ(hilbert_order({1, 1, 5}), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(hilbert_order({4, 1, 1}), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(HilbertOrder, TokenPermutationHilbertMatchesHilbertOrder) {
  const Grid3 g{3, 10, 14};
  EXPECT_EQ(token_permutation(g, TokenOrder::kHilbert), hilbert_order(g));
}

// ---- Hilbert: equality with the classic curve on powers of two --------------------------------------------

// Every aligned run of side^2 (image) or side^3 (video) positions fills an aligned square or cube of `side`.
::testing::AssertionResult runs_fill_aligned_blocks(const Grid3& grid, int64_t side) {
  const std::vector<int64_t> perm = hilbert_order(grid);
  const bool image = grid.t == 1;
  const int64_t run = image ? side * side : side * side * side;
  for (int64_t start = 0; start < grid.size(); start += run) {
    const auto [lo, hi] = bounding_box(grid, perm, start, run);
    for (size_t d = image ? 1 : 0; d < 3; ++d) {
      if (lo[d] % side != 0 || hi[d] - lo[d] + 1 != side) {
        return ::testing::AssertionFailure()
               << "grid (" << grid.t << ", " << grid.h << ", " << grid.w << "), side " << side << ": run at "
               << start << " spans [" << lo[d] << ", " << hi[d] << "] in dim " << d;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(HilbertOrder, PowerOfTwoImagesAreClassicHilbert) {
  constexpr int64_t kQuadrant = 4;  // 16 consecutive positions = one aligned 4x4 square
  for (int64_t h = 4; h <= 64; h *= 2) {
    for (int64_t w = 4; w <= 64; w *= 2) {
      EXPECT_TRUE(runs_fill_aligned_blocks({1, h, w}, kQuadrant));
      for (int64_t side = 2; side <= std::min(h, w); side *= 2) {
        EXPECT_TRUE(runs_fill_aligned_blocks({1, h, w}, side));
      }
    }
  }
  // The 2x2 cell of the curve: a U from the start corner to the adjacent corner along w.
  EXPECT_EQ(hilbert_order({1, 2, 2}), (std::vector<int64_t>{0, 2, 3, 1}));
}

TEST(HilbertOrder, PowerOfTwoVideosAreOctreeHilbert) {
  const std::vector<Grid3> grids = {{2, 2, 2}, {4, 4, 4}, {8, 8, 8}, {16, 16, 16}, {16, 32, 32}, {8, 16, 8}};
  for (const Grid3& g : grids) {
    for (int64_t side = 2; side <= std::min({g.t, g.h, g.w}); side *= 2) {
      EXPECT_TRUE(runs_fill_aligned_blocks(g, side));
    }
  }
}

// ---- Hilbert: locality ------------------------------------------------------------------------------------
// The bounding-box volume of aligned windows does not separate the orders when W divides the window (a
// row-major window of 64 in a 64-wide image is a 1x64 row, volume 64, like an 8x8 square), so compactness is
// measured by the sum of the bounding-box sides (the "extent": 1x64 -> 65, 8x8 -> 17, 4x4x4 -> 12) and by
// the volume of every sliding window. Measured, window 64, Hilbert vs row-major:
//   1x64x64:  extent 17 vs 66,    sliding volume 93 vs 127;
//   16x32x32: extent 12 vs 35,    sliding volume 101 vs 208;
//   13x30x45: extent 14.5 vs 49.6, aligned volume 102 vs 221.

constexpr int64_t kWindow = 64;
constexpr double kIdealExtent2D = 8 + 8 + 1;  // an 8x8 square in one frame
constexpr double kIdealExtent3D = 4 + 4 + 4;  // a 4x4x4 cube

TEST(HilbertOrder, PowerOfTwoWindowsArePerfectSquaresAndCubes) {
  const Grid3 image{1, 64, 64}, video{16, 32, 32};
  const Locality hi_image = locality(image, hilbert_order(image), kWindow);
  const Locality hi_video = locality(video, hilbert_order(video), kWindow);
  EXPECT_DOUBLE_EQ(hi_image.mean_extent, kIdealExtent2D);
  EXPECT_DOUBLE_EQ(hi_image.max_extent, kIdealExtent2D);
  EXPECT_DOUBLE_EQ(hi_image.mean_volume, static_cast<double>(kWindow));
  EXPECT_DOUBLE_EQ(hi_video.mean_extent, kIdealExtent3D);
  EXPECT_DOUBLE_EQ(hi_video.max_extent, kIdealExtent3D);
  EXPECT_DOUBLE_EQ(hi_video.mean_volume, static_cast<double>(kWindow));
}

TEST(HilbertOrder, FarMoreCompactThanRowMajor) {
  struct Case {
    Grid3 grid;
    double max_extent_ratio;  // hilbert mean extent <= ratio * row-major mean extent
    double max_volume_ratio;  // hilbert mean sliding volume <= ratio * row-major mean sliding volume
  };
  // Measured ratios (extent, sliding volume): 0.26, 0.73; 0.34, 0.49; 0.29, 0.49; 0.27, 0.68; 0.18, 0.42.
  const std::vector<Case> cases = {
      {{1, 64, 64}, 0.35, 0.85}, {{16, 32, 32}, 0.45, 0.6},  {{13, 30, 45}, 0.4, 0.6},
      {{1, 45, 80}, 0.35, 0.8},  {{16, 48, 80}, 0.25, 0.55},
  };
  for (const Case& c : cases) {
    const Locality row = locality(c.grid, token_permutation(c.grid, TokenOrder::kRowMajor), kWindow);
    const Locality hil = locality(c.grid, hilbert_order(c.grid), kWindow);
    SCOPED_TRACE(::testing::Message() << "grid (" << c.grid.t << ", " << c.grid.h << ", " << c.grid.w << ")");
    EXPECT_LE(hil.mean_extent, c.max_extent_ratio * row.mean_extent);
    EXPECT_LE(hil.mean_slide_volume, c.max_volume_ratio * row.mean_slide_volume);
  }
  // Where W does not divide the window the aligned-window volume separates them too (CogVideoX: 102 vs 221).
  const Grid3 cog{13, 30, 45};
  EXPECT_LE(locality(cog, hilbert_order(cog), kWindow).mean_volume,
            0.6 * locality(cog, token_permutation(cog, TokenOrder::kRowMajor), kWindow).mean_volume);
}

TEST(HilbertOrder, WindowsStayNearlyCubicOnOddSizes) {
  // Mean extent within 35% of the ideal square / cube, worst window within 2x (measured: mean <= 1.24x, max
  // <= 1.75x).
  constexpr double kMeanSlack = 1.35, kMaxSlack = 2.0;
  const std::vector<Grid3> grids = {{13, 30, 45}, {21, 30, 45}, {13, 45, 45}, {16, 48, 80}, {5, 90, 160},
                                    {31, 31, 31}, {1, 45, 80},  {1, 63, 63},  {1, 30, 45},  {2, 45, 45}};
  for (const Grid3& g : grids) {
    const double ideal = g.t >= 4 ? kIdealExtent3D : kIdealExtent2D;
    const Locality hil = locality(g, hilbert_order(g), kWindow);
    SCOPED_TRACE(::testing::Message() << "grid (" << g.t << ", " << g.h << ", " << g.w << ")");
    EXPECT_LE(hil.mean_extent, kMeanSlack * ideal);
    EXPECT_LE(hil.max_extent, kMaxSlack * ideal);
  }
}

// ---- Other orders -----------------------------------------------------------------------------------------

TEST(TokenPermutation, RowMajorIsIdentity) {
  EXPECT_EQ(token_permutation({2, 2, 3}, TokenOrder::kRowMajor),
            (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
}

TEST(TokenPermutation, ColumnMajorSmallExample) {
  // (t, h, w) = (2, 2, 3): per frame, columns w = 0, 1, 2 each top to bottom.
  EXPECT_EQ(token_permutation({2, 2, 3}, TokenOrder::kColumnMajor),
            (std::vector<int64_t>{0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11}));
  EXPECT_EQ(token_permutation({1, 1, 5}, TokenOrder::kColumnMajor),
            token_permutation({1, 1, 5}, TokenOrder::kRowMajor));
}

TEST(TokenPermutation, TimeMajorSmallExample) {
  // (t, h, w) = (2, 2, 3): for each (h, w) in row-major order, its tokens of frames 0 and 1.
  EXPECT_EQ(token_permutation({2, 2, 3}, TokenOrder::kTimeMajor),
            (std::vector<int64_t>{0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11}));
  EXPECT_EQ(token_permutation({1, 3, 4}, TokenOrder::kTimeMajor),
            token_permutation({1, 3, 4}, TokenOrder::kRowMajor));
}

TEST(TokenPermutation, EveryOrderIsAPermutation) {
  const std::vector<Grid3> grids = {{1, 1, 1}, {1, 7, 9}, {3, 4, 5}, {13, 6, 1}};
  for (TokenOrder order : {TokenOrder::kRowMajor, TokenOrder::kColumnMajor, TokenOrder::kTimeMajor,
                           TokenOrder::kRandom, TokenOrder::kHilbert}) {
    for (const Grid3& g : grids)
      EXPECT_TRUE(is_permutation_of(g, token_permutation(g, order, 7))) << to_string(order);
  }
}

TEST(TokenPermutation, RandomIsSeedReproducible) {
  const Grid3 g{4, 16, 16};
  const auto a = token_permutation(g, TokenOrder::kRandom, 123);
  EXPECT_EQ(a, token_permutation(g, TokenOrder::kRandom, 123));
  EXPECT_NE(a, token_permutation(g, TokenOrder::kRandom, 124));
  EXPECT_NE(a, token_permutation(g, TokenOrder::kRowMajor));
  // std::mt19937_64 is fully specified by the standard and the Fisher-Yates draw is our own, so this golden
  // output is the same on every standard library.
  EXPECT_EQ(token_permutation({1, 1, 10}, TokenOrder::kRandom, 42),
            (std::vector<int64_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6}));
}

TEST(TokenPermutation, RandomIsUniformOverSmallPermutations) {
  // All 3! orders of 3 tokens over many seeds: each within 15% of the expected count.
  constexpr int kSeeds = 6000, kOrders = 6;
  constexpr double kExpected = static_cast<double>(kSeeds) / kOrders, kTolerance = 0.15;
  std::map<std::vector<int64_t>, int> counts;
  for (uint64_t seed = 0; seed < kSeeds; ++seed)
    ++counts[token_permutation({1, 1, 3}, TokenOrder::kRandom, seed)];
  ASSERT_EQ(counts.size(), static_cast<size_t>(kOrders));
  for (const auto& [perm, count] : counts) {
    EXPECT_NEAR(count, kExpected, kTolerance * kExpected);
  }
}

// ---- Names ------------------------------------------------------------------------------------------------

TEST(TokenOrderNames, RoundTrip) {
  for (TokenOrder order : {TokenOrder::kRowMajor, TokenOrder::kColumnMajor, TokenOrder::kTimeMajor,
                           TokenOrder::kRandom, TokenOrder::kHilbert}) {
    EXPECT_EQ(parse_token_order(to_string(order)), order);
  }
  EXPECT_EQ(to_string(TokenOrder::kTimeMajor), "time_major");
  EXPECT_EQ(parse_token_order("hilbert"), TokenOrder::kHilbert);
}

// ---- Errors -----------------------------------------------------------------------------------------------

TEST(TokenOrderErrors, UnknownOrderNamesArgumentAndAcceptedValues) {
  const std::string msg = invalid_argument_message([] { parse_token_order("zigzag"); });
  EXPECT_TRUE(contains(msg, "`order`")) << msg;
  EXPECT_TRUE(contains(msg, "zigzag")) << msg;
  for (const char* name : {"row_major", "column_major", "time_major", "random", "hilbert"}) {
    EXPECT_TRUE(contains(msg, name)) << msg;
  }
  EXPECT_TRUE(contains(invalid_argument_message([] { parse_token_order("Hilbert"); }), "`order`"));
  EXPECT_TRUE(contains(invalid_argument_message([] { parse_token_order(""); }), "`order`"));
}

TEST(TokenOrderErrors, BadGridNamesGridAndValue) {
  const std::string zero = invalid_argument_message([] {
    token_permutation({1, 0, 4}, TokenOrder::kRowMajor);
  });
  EXPECT_TRUE(contains(zero, "`grid`")) << zero;
  EXPECT_TRUE(contains(zero, "(1, 0, 4)")) << zero;
  const std::string negative = invalid_argument_message([] { hilbert_order({-3, 2, 2}); });
  EXPECT_TRUE(contains(negative, "`grid`")) << negative;
  EXPECT_TRUE(contains(negative, "-3")) << negative;
  EXPECT_TRUE(contains(invalid_argument_message([] { (void)Grid3{2, 2, 0}.size(); }), "`grid`"));
}

TEST(TokenOrderErrors, OverflowingGridIsRejected) {
  constexpr int64_t kBig = int64_t{1} << 31;
  const std::string msg = invalid_argument_message([] { hilbert_order({kBig, kBig, 4}); });
  EXPECT_TRUE(contains(msg, "`grid`")) << msg;
  EXPECT_TRUE(contains(msg, "overflow")) << msg;
  const int64_t max = std::numeric_limits<int64_t>::max();
  EXPECT_TRUE(contains(invalid_argument_message([&] { (void)Grid3{1, max, 2}.size(); }), "overflow"));
}

TEST(InvertPermutation, UndoesAndValidates) {
  const std::vector<int64_t> perm = {2, 0, 3, 1};
  const std::vector<int64_t> inv = invert_permutation(perm);
  EXPECT_EQ(inv, (std::vector<int64_t>{1, 3, 0, 2}));
  for (size_t i = 0; i < perm.size(); ++i)
    EXPECT_EQ(perm[static_cast<size_t>(inv[i])], static_cast<int64_t>(i));
  EXPECT_TRUE(invert_permutation({}).empty());

  const std::string out_of_range = invalid_argument_message([] { invert_permutation({0, 2}); });
  EXPECT_TRUE(contains(out_of_range, "`perm`")) << out_of_range;
  EXPECT_TRUE(contains(out_of_range, "perm[1] = 2")) << out_of_range;
  const std::string repeated = invalid_argument_message([] { invert_permutation({1, 0, 1}); });
  EXPECT_TRUE(contains(repeated, "`perm`")) << repeated;
  EXPECT_TRUE(contains(repeated, "not a permutation")) << repeated;
  EXPECT_TRUE(contains(invalid_argument_message([] { invert_permutation({-1}); }), "`perm`"));
}

}  // namespace
}  // namespace sparge
