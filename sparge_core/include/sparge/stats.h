// AttentionStats: honest sparsity accounting of one attention call, always with its block sizes.
#pragma once

#include <cstdint>
#include <string>

namespace sparge {

struct AttentionStats {
  int64_t block_q = 0, block_k = 0;
  int64_t stage2_group_rows = 0;  // rows per stage-2 decision (block_q when the whole tile decides)

  // Block level, summed over (batch, head). Valid = holding at least one causal-allowed pair.
  int64_t valid_blocks = 0;
  int64_t computed_blocks = 0;  // selected by stage 1 (Q.K^T computed)

  // Stage 2, in units of (row group, key block): groups of computed blocks that had at least one unmasked
  // score, and how many of them skipped exp, the row-sum update and P.V.
  int64_t stage2_groups = 0;
  int64_t stage2_skipped = 0;

  // Token level, summed over (batch, head): causal-allowed (query, key) pairs, and those inside computed
  // blocks.
  int64_t valid_pairs = 0;
  int64_t computed_pairs = 0;
  int64_t stage2_skipped_pairs = 0;  // causal-allowed pairs inside skipped (row group, key block) units

  double prediction_ms = 0.0;  // stage-1 time (wall clock on CPU, device-synchronized on GPU)
  double attention_ms = 0.0;

  double stage1_sparsity() const;       // 1 - computed_blocks / valid_blocks
  double stage2_skip_fraction() const;  // stage2_skipped / stage2_groups
  double token_density() const;         // computed_pairs / valid_pairs
  double pv_density() const;  // (computed_pairs - stage2_skipped_pairs) / valid_pairs: P.V work actually done
  std::string summary() const;  // one line, e.g. "stage1 sparsity 0.62 (128x64 blocks), stage2 skipped ..."
};

// Adds counts (not times: those add too, as sequential calls).
AttentionStats& operator+=(AttentionStats& a, const AttentionStats& b);

}  // namespace sparge
