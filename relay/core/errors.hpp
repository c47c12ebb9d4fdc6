// The three kinds of failure adapters translate vendor errors into.
#pragma once

#include <stdexcept>
#include <string>

namespace outbox::relay {

// Database or broker away, timeout, lost connection: retry with backoff.
class TransientError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Nothing the relay can retry its way out of (wrong schema, privileges): stop, let the operator act.
class FatalError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The outbox table is missing or lacks columns: fatal now, but a migration (a Kubernetes Job,
// a deploy step) may be on its way, so a supervisor should restart the relay rather than stop.
class SchemaError : public FatalError {
 public:
  using FatalError::FatalError;
};

// The database refused the relay's role: authentication failed, or a privilege the relay
// needs is missing. Waiting cannot help; an operator must fix the credentials or the grants,
// so a supervisor should not restart the relay in a loop either.
class AccessError : public FatalError {
 public:
  using FatalError::FatalError;
};

// A configuration value is wrong; the message names the key.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace outbox::relay
