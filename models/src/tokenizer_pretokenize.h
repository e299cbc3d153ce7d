// Internal: the pre-tokenizers of byte-level BPE, as hand-written matchers over UTF-8 code points.
#pragma once

#include <string_view>
#include <vector>

#include "sparge/models/tokenizer.h"

namespace sparge::models::detail {

// Splits `text` by `steps` in order (each step splits every piece the previous one made) and appends the
// pieces to `out`: views into `text`, in order, together covering it exactly. Invalid UTF-8 bytes are single
// code points of no class (they end up in "other" runs).
void pre_tokenize(const std::vector<PreTokenizeStep>& steps, std::string_view text,
                  std::vector<std::string_view>& out);

}  // namespace sparge::models::detail
