// The relay's backoff: the one shared with the library (outbox/common/backoff.hpp).
#pragma once

#include "outbox/common/backoff.hpp"

namespace outbox::relay {

using BackoffPolicy = common::BackoffPolicy;

}  // namespace outbox::relay
