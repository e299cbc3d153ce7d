// AttentionStats ratios and summary.
#include "sparge/stats.h"

#include <cstdio>

namespace sparge {
namespace {
double ratio(int64_t num, int64_t den) {
  return den > 0 ? static_cast<double>(num) / static_cast<double>(den) : 0.0;
}
}  // namespace

double AttentionStats::stage1_sparsity() const {
  return valid_blocks > 0 ? 1.0 - ratio(computed_blocks, valid_blocks) : 0.0;
}
double AttentionStats::stage2_skip_fraction() const {
  return ratio(stage2_skipped, stage2_groups);
}
double AttentionStats::token_density() const {
  return ratio(computed_pairs, valid_pairs);
}
double AttentionStats::pv_density() const {
  return ratio(computed_pairs - stage2_skipped_pairs, valid_pairs);
}

std::string AttentionStats::summary() const {
  char buf[256];
  std::snprintf(
      buf, sizeof buf,
      "stage1 sparsity %.4f (%lldx%lld blocks), stage2 skipped %.4f of (%lld-row group, block) units, "
      "token density %.4f, P.V density %.4f",
      stage1_sparsity(), static_cast<long long>(block_q), static_cast<long long>(block_k),
      stage2_skip_fraction(), static_cast<long long>(stage2_group_rows), token_density(), pv_density());
  return buf;
}

AttentionStats& operator+=(AttentionStats& a, const AttentionStats& b) {
  a.valid_blocks += b.valid_blocks;
  a.computed_blocks += b.computed_blocks;
  a.stage2_groups += b.stage2_groups;
  a.stage2_skipped += b.stage2_skipped;
  a.valid_pairs += b.valid_pairs;
  a.computed_pairs += b.computed_pairs;
  a.stage2_skipped_pairs += b.stage2_skipped_pairs;
  a.prediction_ms += b.prediction_ms;
  a.attention_ms += b.attention_ms;
  return a;
}

}  // namespace sparge
