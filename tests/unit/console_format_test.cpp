// The operator commands' text output: what counts as printable, base64, cells, durations.
#include <catch2/catch.hpp>

#include "relay/cli/console_format.hpp"

using namespace outbox::relay::cli;

TEST_CASE("payloads print as text only when they are valid, printable UTF-8", "[console]") {
  CHECK(printable_utf8("{\"amount\": 12}\n"));
  CHECK(printable_utf8("Gr\xc3\xbc\xc3\x9f" "e \xe2\x82\xac"));  // ü ß €
  CHECK_FALSE(printable_utf8(std::string("a\0b", 3)));
  CHECK_FALSE(printable_utf8("\x1b[31m"));           // a control character
  CHECK_FALSE(printable_utf8("\xc3"));                // truncated sequence
  CHECK_FALSE(printable_utf8("\xc0\xaf"));            // overlong encoding
  CHECK_FALSE(printable_utf8("\xed\xa0\x80"));        // a surrogate
}

TEST_CASE("base64 and hex dumps of arbitrary bytes", "[console]") {
  CHECK(base64("") == "");
  CHECK(base64("f") == "Zg==");
  CHECK(base64("fo") == "Zm8=");
  CHECK(base64("foo") == "Zm9v");
  CHECK(base64(std::string("\xff\x00\x10", 3)) == "/wAQ");
  CHECK(hex_dump(std::string("\x00\x01\xff", 3)) == "000000 00 01 ff");
  CHECK(hex_dump(std::string(17, 'a')).find("\n000010 61") != std::string::npos);
}

TEST_CASE("cells are one line and cut without splitting a UTF-8 sequence", "[console]") {
  CHECK(cell("line one\nline two") == "line one line two");
  CHECK(cell("abcdefghij", 8) == "abcde...");
  CHECK(cell("abcd\xe2\x82\xac" "efgh", 8) == "abcd...");  // the euro sign is not cut in half
  CHECK(cell("short", 8) == "short");
}

TEST_CASE("durations and counts read as people write them", "[console]") {
  CHECK(duration(4.04) == "4.0s");
  CHECK(duration(75) == "1m15s");
  CHECK(duration(3723) == "1h2m3s");
  CHECK(duration(2 * 86400 + 300) == "2d0h5m0s");
  CHECK(count_of(1, "event") == "1 event");
  CHECK(count_of(0, "event") == "0 events");
}
