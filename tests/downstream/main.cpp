// Uses the installed library's public API the way a service would; needs no database to run.
#include <outbox/consumer_runner.hpp>
#include <outbox/idempotency_keys.hpp>
#include <outbox/inbox.hpp>
#include <outbox/outbox_writer.hpp>
#include <outbox/retention.hpp>

#include <iostream>

int main() {
  outbox::OutboxWriter writer;
  outbox::Inbox inbox("downstream-service");
  outbox::IdempotencyKeys keys(std::chrono::hours(24));
  const bool ok = outbox::looks_like_uuid(outbox::uuid_from_position("t", 0, 1)) && inbox.consumer() == "downstream-service";
  std::cout << (ok ? "downstream: linked against outbox::outbox" : "downstream: unexpected result") << "\n";
  return ok ? 0 : 1;
}
