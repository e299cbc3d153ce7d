// Token orders over a (T, H, W) grid, including a generalized Hilbert curve for boxes of any size whose
// consecutive cells are always grid neighbours.
//
// Hilbert construction. A box is described by an origin cell and three axes a, b, c (each: a grid dimension,
// a direction +-1 and a length A, B, C). fill() visits every cell of the box exactly once, moving to a
// neighbour at every step, starting at the origin and ending at the far end of the major axis a:
// origin + (A - 1) * a.
// Colouring cells by the parity of t + h + w shows when such a path can exist: each step changes the colour,
// so with A*B*C even the two ends must differ in colour (A even), and with A*B*C odd they must share it
// (A odd). A == 1 is impossible unless the box is a single cell. Hence the rule (path_exists):
//     box is one cell, or A >= 2 and (A even, or A, B, C all odd).
// Every box split below keeps every sub-box under this rule, so no diagonal step is ever needed:
//   - long split:    A is clearly the longest side: two halves along a, both from origin to the end of a;
//   - U split (b):   the (a, b) plane is split into a U of three boxes carrying the full c side:
//                    up along b in the near a-half, across the far b-half along a, back down the far a-half;
//   - U split (c):   the same with b and c exchanged;
//   - regular split: 5 boxes through the 8 octants (the 3D Hilbert cell), in (b, c) or (c, b) orientation.
// The preferred split follows the aspect ratios (keeping sub-boxes roughly cubic); the split sizes are the
// ones nearest the half, even sizes first, that keep every sub-box valid. When the preferred split has no
// valid sizes the next one is tried; one of them always fits (the exhaustive tests check every small size).
// The whole grid is filled by fill_free(), whose end is free: the longest side is the major axis when the
// rule allows it; otherwise (it is odd and another side is even) an even-length slab along it comes first and
// the odd-length rest, about as long as the even side, is filled after it the same way.
// For power-of-two squares and cubes this reduces to the classic Hilbert curve (quadrants / octants).
#include "sparge/token_order.h"

#include <algorithm>
#include <array>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>

#include "sparge/error.h"

namespace sparge {

namespace {

constexpr std::string_view kRowMajorName = "row_major";
constexpr std::string_view kColumnMajorName = "column_major";
constexpr std::string_view kTimeMajorName = "time_major";
constexpr std::string_view kRandomName = "random";
constexpr std::string_view kHilbertName = "hilbert";

constexpr int kDims = 3;          // grid dimensions, index 0 = t, 1 = h, 2 = w
constexpr int kSplitOffsets = 5;  // split sizes tried around the half: h, h+1, h-1, h+2, h-2

// Validates grid (every dim >= 1, product fits int64) and returns T*H*W. `where` names the calling function.
int64_t checked_size(const Grid3& grid, const char* where) {
  if (grid.t < 1 || grid.h < 1 || grid.w < 1) {
    detail::fail(where, "argument `grid`: expected every dim >= 1, got (t, h, w) = (", grid.t, ", ", grid.h,
                 ", ", grid.w, ")");
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (grid.h > kMax / grid.w || grid.t > kMax / (grid.h * grid.w)) {
    detail::fail(where, "argument `grid`: t*h*w overflows int64, got (t, h, w) = (", grid.t, ", ", grid.h,
                 ", ", grid.w, ")");
  }
  return grid.t * grid.h * grid.w;
}

// ---- Random order -----------------------------------------------------------------------------------------

// Uniform integer in [0, bound), bound >= 1, by rejection sampling on the full 64-bit output of rng (unbiased
// and, unlike std::uniform_int_distribution, the same on every standard library).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound: outputs below it would bias the result
  while (true) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

// n tokens: a uniformly random permutation of [0, n) by Fisher-Yates from std::mt19937_64(seed).
std::vector<int64_t> random_order(int64_t n, uint64_t seed) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i >= 1; --i) {
    const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

// ---- Generalized Hilbert curve ----------------------------------------------------------------------------

using Cell = std::array<int64_t, kDims>;  // (t, h, w)

// One axis of a box: grid dimension, direction (+1 or -1) and number of cells (>= 1).
struct Axis {
  int dim = 0;
  int64_t step = 1;
  int64_t len = 1;

  Axis with_len(int64_t n) const { return {dim, step, n}; }
  Axis reversed(int64_t n) const { return {dim, -step, n}; }
};

// cell moved n cells along axis.
Cell advance(Cell cell, const Axis& axis, int64_t n) {
  cell[static_cast<size_t>(axis.dim)] += axis.step * n;
  return cell;
}

// Box sides (major, minor, minor), each >= 1: the parity rule of the file comment for a neighbour-step path
// from the origin corner to the far end of the major side. Necessary for any such path, sufficient for fill.
bool path_exists(int64_t major, int64_t minor1, int64_t minor2) {
  if (major == 1 && minor1 == 1 && minor2 == 1) return true;
  if (major < 2) return false;
  return major % 2 == 0 || (minor1 % 2 == 1 && minor2 % 2 == 1);
}

// Candidate sizes n1 for splitting a side of n >= 2 cells into n1 + (n - n1), both >= 1: within 2 of the
// half, ordered by parity preference (both parts even, first part even, second part even, neither), then by
// closeness. Returns the count written to out.
int split_candidates(int64_t n, std::array<int64_t, kSplitOffsets>& out) {
  constexpr std::array<int64_t, kSplitOffsets> kOffsets = {0, 1, -1, 2, -2};
  constexpr int kParityRanks = 4;
  const int64_t half = n / 2;
  int count = 0;
  for (int rank = 0; rank < kParityRanks; ++rank) {
    for (int64_t offset : kOffsets) {
      const int64_t n1 = half + offset;
      if (n1 < 1 || n1 > n - 1) continue;
      const bool first_even = n1 % 2 == 0, second_even = (n - n1) % 2 == 0;
      const int r = first_even && second_even ? 0 : first_even ? 1 : second_even ? 2 : 3;
      if (r == rank) out[static_cast<size_t>(count++)] = n1;
    }
  }
  return count;
}

enum class Split { kLong, kUB, kUC, kRegularBC, kRegularCB };

// A chosen split and its first-part sizes along a, b, c (unused ones are 0).
struct Plan {
  Split kind = Split::kLong;
  int64_t a1 = 0, b1 = 0, c1 = 0;
};

// Box sides (A, B, C) and a split kind: the sizes (nearest the half, even first) that keep every sub-box
// valid; false when there are none.
bool plan_split(Split kind, int64_t A, int64_t B, int64_t C, Plan& plan) {
  std::array<int64_t, kSplitOffsets> ca{}, cb{}, cc{};
  plan.kind = kind;
  switch (kind) {
    case Split::kLong: {
      if (A < 2) return false;
      const int na = split_candidates(A, ca);
      for (int i = 0; i < na; ++i) {
        const int64_t a1 = ca[static_cast<size_t>(i)];
        if (path_exists(a1, B, C) && path_exists(A - a1, B, C)) {
          plan.a1 = a1;
          return true;
        }
      }
      return false;
    }
    case Split::kUB:
    case Split::kUC: {
      // m: the split minor side, k: the carried one. Parts: (m1, a1, k), (A, m - m1, k), (m1, A - a1, k).
      const int64_t m = kind == Split::kUB ? B : C, k = kind == Split::kUB ? C : B;
      if (A < 2 || m < 2) return false;
      const int na = split_candidates(A, ca), nm = split_candidates(m, cb);
      for (int j = 0; j < nm; ++j) {
        const int64_t m1 = cb[static_cast<size_t>(j)];
        if (!path_exists(A, m - m1, k)) continue;
        for (int i = 0; i < na; ++i) {
          const int64_t a1 = ca[static_cast<size_t>(i)];
          if (path_exists(m1, a1, k) && path_exists(m1, A - a1, k)) {
            plan.a1 = a1;
            (kind == Split::kUB ? plan.b1 : plan.c1) = m1;
            return true;
          }
        }
      }
      return false;
    }
    case Split::kRegularBC:
    case Split::kRegularCB: {
      // (p, q) = (b, c) or (c, b). Parts: (p1, q1, a1), (Q, a1, p2), (A, p1, q2), (Q, a2, p2), (p1, q1, a2).
      const int64_t P = kind == Split::kRegularBC ? B : C, Q = kind == Split::kRegularBC ? C : B;
      if (A < 2 || P < 2 || Q < 2) return false;
      const int na = split_candidates(A, ca), np = split_candidates(P, cb), nq = split_candidates(Q, cc);
      for (int i = 0; i < na; ++i) {
        const int64_t a1 = ca[static_cast<size_t>(i)], a2 = A - a1;
        for (int j = 0; j < np; ++j) {
          const int64_t p1 = cb[static_cast<size_t>(j)], p2 = P - p1;
          if (!path_exists(Q, a1, p2) || !path_exists(Q, a2, p2)) continue;
          for (int l = 0; l < nq; ++l) {
            const int64_t q1 = cc[static_cast<size_t>(l)], q2 = Q - q1;
            if (path_exists(p1, q1, a1) && path_exists(A, p1, q2) && path_exists(p1, q1, a2)) {
              plan.a1 = a1;
              plan.b1 = kind == Split::kRegularBC ? p1 : q1;
              plan.c1 = kind == Split::kRegularBC ? q1 : p1;
              return true;
            }
          }
        }
      }
      return false;
    }
  }
  return false;
}

// Writes the cells of boxes of the grid, in path order, as row-major linear indices.
class HilbertBuilder {
 public:
  HilbertBuilder(const Grid3& grid, std::vector<int64_t>& out) : grid_(grid), out_(out) {}

  // Box: origin cell and axes a (major), b, c with path_exists(a.len, b.len, c.len). Appends its
  // a.len*b.len*c.len cells, from origin to origin + (a.len - 1) * a, every step between grid neighbours.
  void fill(const Cell& o, const Axis& a, const Axis& b, const Axis& c) {
    const int64_t A = a.len, B = b.len, C = c.len;
    if (B == 1 && C == 1) {  // a straight run (also the single cell)
      for (int64_t i = 0; i < A; ++i) emit(advance(o, a, i));
      return;
    }
    if (B == 1) return fill(o, a, c, b);  // keep a flat box in the (a, b) plane

    Plan plan;
    if (!choose(A, B, C, plan)) {
      throw std::logic_error("hilbert_order: no valid split for a box of sides (" + std::to_string(A) + ", " +
                             std::to_string(B) + ", " + std::to_string(C) + ")");
    }
    switch (plan.kind) {
      case Split::kLong:
        fill(o, a.with_len(plan.a1), b, c);
        fill(advance(o, a, plan.a1), a.with_len(A - plan.a1), b, c);
        return;
      case Split::kUB:
        fill_u(o, a, b, c, plan.a1, plan.b1);
        return;
      case Split::kUC:
        fill_u(o, a, c, b, plan.a1, plan.c1);
        return;
      case Split::kRegularBC:
        fill_regular(o, a, b, c, plan.a1, plan.b1, plan.c1);
        return;
      case Split::kRegularCB:
        fill_regular(o, a, c, b, plan.a1, plan.c1, plan.b1);
        return;
    }
  }

  // Box: origin cell and three axes in any order. Appends all its cells starting at origin, every step
  // between grid neighbours; the end is free. The major axis is the longest side. When the parity rule
  // forbids it (the longest side L is odd and another side E is even), a slab of even length L - R along it
  // is filled first, ending next to the rest, a slab of odd length R ~ E (kept >= kMinRest so it is not a
  // thin sheet), which is filled the same way.
  void fill_free(const Cell& o, std::array<Axis, kDims> axes) {
    constexpr int64_t kMinRest = 3;
    std::stable_sort(axes.begin(), axes.end(), [](const Axis& x, const Axis& y) { return x.len > y.len; });
    const Axis &a = axes[0], &b = axes[1], &c = axes[2];
    if (path_exists(a.len, b.len, c.len)) return fill(o, a, b, c);
    // Here a.len is odd and >= even_side + 1 >= 3.
    const int64_t even_side = std::max(b.len % 2 == 0 ? b.len : 0, c.len % 2 == 0 ? c.len : 0);
    const int64_t rest =
        std::min(std::max(even_side - 1, kMinRest), a.len - 2);  // odd, so a.len - rest is even
    fill(o, a.with_len(a.len - rest), b, c);
    fill_free(advance(o, a, a.len - rest), {a.with_len(rest), b, c});
  }

 private:
  // Box sides (A, B, C) with B >= 2, C >= 1: the split to use, chosen by aspect ratio, falling back to the
  // others when its sizes cannot keep the parity rule. False only if no split fits (never, for a valid box).
  static bool choose(int64_t A, int64_t B, int64_t C, Plan& plan) {
    // Aspect thresholds as ratios num/den: a side "clearly longer" than another exceeds it by these factors.
    constexpr int64_t kLongNum = 3, kLongDen = 2;  // A > 1.5 * max(B, C): split a only
    constexpr int64_t kFlatNum = 4, kFlatDen = 3;  // B > 4/3 * C: the box is flat in c, do not split c
    Split primary = Split::kRegularBC;
    if (kLongDen * A > kLongNum * B && kLongDen * A > kLongNum * C) {
      primary = Split::kLong;
    } else if (kFlatDen * B > kFlatNum * C) {
      primary = Split::kUB;
    } else if (kFlatDen * C > kFlatNum * B) {
      primary = Split::kUC;
    }
    const Split u_larger = B >= C ? Split::kUB : Split::kUC, u_smaller = B >= C ? Split::kUC : Split::kUB;
    const std::array<Split, 6> order = {primary,  Split::kRegularBC, Split::kRegularCB,
                                        u_larger, u_smaller,         Split::kLong};
    for (Split kind : order) {
      if (plan_split(kind, A, B, C, plan)) return true;
    }
    return false;
  }

  // U split of the (a, m) plane carrying k: near a-half up along m, far m-part across along a, far a-half
  // back down. a1, m1: sizes of the near parts.
  void fill_u(const Cell& o, const Axis& a, const Axis& m, const Axis& k, int64_t a1, int64_t m1) {
    const int64_t A = a.len, M = m.len;
    fill(o, m.with_len(m1), a.with_len(a1), k);
    fill(advance(o, m, m1), a, m.with_len(M - m1), k);
    fill(advance(advance(o, a, A - 1), m, m1 - 1), m.reversed(m1), a.reversed(A - a1), k);
  }

  // Regular split into 5 boxes covering the octants, (p, q) = (b, c) or (c, b). Cells and path ends in local
  // (a, p, q) coordinates:
  //   1: a < a1,  p < p1,  q < q1   (0, 0, 0)        -> (0, p1-1, 0)
  //   2: a < a1,  p >= p1           (0, p1, 0)       -> (0, p1, Q-1)
  //   3:          p < p1,  q >= q1  (0, p1-1, Q-1)   -> (A-1, p1-1, Q-1)
  //   4: a >= a1, p >= p1           (A-1, p1, Q-1)   -> (A-1, p1, 0)
  //   5: a >= a1, p < p1,  q < q1   (A-1, p1-1, 0)   -> (A-1, 0, 0)
  void fill_regular(const Cell& o, const Axis& a, const Axis& p, const Axis& q, int64_t a1, int64_t p1,
                    int64_t q1) {
    const int64_t A = a.len, P = p.len, Q = q.len;
    const Cell far_a = advance(o, a, A - 1);
    fill(o, p.with_len(p1), q.with_len(q1), a.with_len(a1));
    fill(advance(o, p, p1), q, a.with_len(a1), p.with_len(P - p1));
    fill(advance(advance(o, p, p1 - 1), q, Q - 1), a, p.reversed(p1), q.reversed(Q - q1));
    fill(advance(advance(far_a, p, p1), q, Q - 1), q.reversed(Q), a.reversed(A - a1), p.with_len(P - p1));
    fill(advance(far_a, p, p1 - 1), p.reversed(p1), q.with_len(q1), a.reversed(A - a1));
  }

  void emit(const Cell& cell) { out_.push_back((cell[0] * grid_.h + cell[1]) * grid_.w + cell[2]); }

  const Grid3& grid_;
  std::vector<int64_t>& out_;
};

}  // namespace

int64_t Grid3::size() const {
  return checked_size(*this, "Grid3::size");
}

TokenOrder parse_token_order(std::string_view name) {
  if (name == kRowMajorName) return TokenOrder::kRowMajor;
  if (name == kColumnMajorName) return TokenOrder::kColumnMajor;
  if (name == kTimeMajorName) return TokenOrder::kTimeMajor;
  if (name == kRandomName) return TokenOrder::kRandom;
  if (name == kHilbertName) return TokenOrder::kHilbert;
  detail::fail("parse_token_order", "argument `order`: expected one of \"", kRowMajorName, "\", \"",
               kColumnMajorName, "\", \"", kTimeMajorName, "\", \"", kRandomName, "\", \"", kHilbertName,
               "\", got \"", name, "\"");
}

std::string_view to_string(TokenOrder order) {
  switch (order) {
    case TokenOrder::kRowMajor:
      return kRowMajorName;
    case TokenOrder::kColumnMajor:
      return kColumnMajorName;
    case TokenOrder::kTimeMajor:
      return kTimeMajorName;
    case TokenOrder::kRandom:
      return kRandomName;
    case TokenOrder::kHilbert:
      return kHilbertName;
  }
  return "?";
}

std::vector<int64_t> hilbert_order(const Grid3& grid) {
  const int64_t n = checked_size(grid, "hilbert_order");
  std::vector<int64_t> perm;
  perm.reserve(static_cast<size_t>(n));
  HilbertBuilder builder(grid, perm);
  // Listed w, h, t: ties between equal sides prefer w, then h, then t as the major axis.
  builder.fill_free(Cell{0, 0, 0}, {Axis{2, 1, grid.w}, Axis{1, 1, grid.h}, Axis{0, 1, grid.t}});
  return perm;
}

std::vector<int64_t> token_permutation(const Grid3& grid, TokenOrder order, uint64_t seed) {
  const int64_t n = checked_size(grid, "token_permutation");
  const int64_t T = grid.t, H = grid.h, W = grid.w;
  std::vector<int64_t> perm;
  perm.reserve(static_cast<size_t>(n));
  switch (order) {
    case TokenOrder::kRowMajor:
      for (int64_t i = 0; i < n; ++i) perm.push_back(i);
      return perm;
    case TokenOrder::kColumnMajor:
      for (int64_t t = 0; t < T; ++t)
        for (int64_t w = 0; w < W; ++w)
          for (int64_t h = 0; h < H; ++h) perm.push_back((t * H + h) * W + w);
      return perm;
    case TokenOrder::kTimeMajor:
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          for (int64_t t = 0; t < T; ++t) perm.push_back((t * H + h) * W + w);
      return perm;
    case TokenOrder::kRandom:
      return random_order(n, seed);
    case TokenOrder::kHilbert:
      return hilbert_order(grid);
  }
  detail::fail("token_permutation", "argument `order`: unknown TokenOrder value ", static_cast<int>(order));
}

std::vector<int64_t> invert_permutation(const std::vector<int64_t>& perm) {
  const auto n = static_cast<int64_t>(perm.size());
  constexpr int64_t kUnset = -1;
  std::vector<int64_t> inv(perm.size(), kUnset);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = perm[static_cast<size_t>(i)];
    if (v < 0 || v >= n) {
      detail::fail("invert_permutation", "argument `perm`: expected entries in [0, ", n, "), got perm[", i,
                   "] = ", v);
    }
    int64_t& slot = inv[static_cast<size_t>(v)];
    if (slot != kUnset) {
      detail::fail("invert_permutation", "argument `perm`: not a permutation, value ", v, " at positions ",
                   slot, " and ", i);
    }
    slot = i;
  }
  return inv;
}

}  // namespace sparge
