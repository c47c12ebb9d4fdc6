#include <catch2/catch.hpp>

#include "relay/core/backoff.hpp"

using namespace std::chrono_literals;

TEST_CASE("backoff doubles from the initial delay and stops at the cap", "[backoff]") {
  outbox::relay::BackoffPolicy p{100ms, 1s};
  CHECK(p.delay(0) == 0ms);
  CHECK(p.delay(1) == 100ms);
  CHECK(p.delay(2) == 200ms);
  CHECK(p.delay(4) == 800ms);
  CHECK(p.delay(5) == 1s);
  CHECK(p.delay(1000) == 1s);
}
