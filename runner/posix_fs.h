// The runner's file-system helpers are sparge_core's (see sparge/posix_fs.h for why not std::filesystem).
#pragma once

#include "sparge/posix_fs.h"

namespace sparge::runner {
namespace posix = sparge::posix;
}  // namespace sparge::runner
