// Iterates the key blocks a CTA computes: the mask row of (batch, query head, query block), in ascending
// order.
//   counts: (B, Hq, NQB) int32, indices: (B, Hq, NQB, NKB) int32 (first counts entries valid, ascending).
// Indices are fetched two steps ahead: step n's loads of block n + 1 (peek) then never wait on a global load,
// the load of index n + 2 hides behind step n's MMAs.
#pragma once

#include <cstdint>

#include "params.h"

namespace sparge::cuda {

class BlockMaskIterator {
 public:
  __device__ BlockMaskIterator(const AttentionParams& p, int batch, int head, int q_block) {
    const int64_t row = (static_cast<int64_t>(batch) * p.heads_q + head) * p.num_q_blocks + q_block;
    count_ = __ldg(p.mask_counts + row);
    indices_ = p.mask_indices + row * p.num_k_blocks;
    next_ = count_ > 0 ? __ldg(indices_) : -1;
    after_ = count_ > 1 ? __ldg(indices_ + 1) : -1;
  }
  __device__ int count() const { return count_; }
  __device__ bool empty() const { return count_ == 0; }
  // Key block of step n (fetched two calls earlier), and fetches step n + 2.
  __device__ int advance(int n) {
    const int kb = next_;
    next_ = after_;
    after_ = n + 2 < count_ ? __ldg(indices_ + n + 2) : -1;
    return kb;
  }
  // Key block of step n + 1 after advance(n) (of step 0 before it), or -1 after the last step.
  __device__ int peek() const { return next_; }

 private:
  const int32_t* indices_;
  int count_;
  int next_;   // block of the next step
  int after_;  // block of the step after it
};

}  // namespace sparge::cuda
