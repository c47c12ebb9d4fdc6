// Translates libpqxx exceptions into the core's error kinds at the adapter boundary.
#pragma once

#include <string>

namespace outbox::relay::pg {

// Call from inside a catch block: rethrows the current exception as TransientError
// (connection lost, timeout, serialization failure, server shutting down, unknown commit
// outcome), SchemaError (missing table or column) or FatalError (missing privilege). `what` names the
// operation for the message.
[[noreturn]] void rethrow_translated(const std::string& what);

}  // namespace outbox::relay::pg
