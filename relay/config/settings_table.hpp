// The declarative table of every setting: key, kind, default (from Config's defaults),
// bounds or choices, whether it is a secret, and its documentation. The loader, the redacted
// dump and the reference are all read from it.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "relay/config/config.hpp"

namespace outbox::relay::config::detail {

enum class Kind { text, integer, choice };

struct Setting {
  std::string key;
  Kind kind = Kind::text;
  std::string description{};
  std::function<std::string&(Config&)> text{};
  std::function<int&(Config&)> integer{};
  std::vector<std::string> choices{};
  std::function<std::size_t(Config&)> chosen{};  // index into choices
  std::function<void(Config&, std::size_t)> choose{};
  int min = 0;
  int max = 0;
  bool secret = false;
};

// The value of `s` in `c` as text (a choice by its name).
[[nodiscard]] std::string shown(const Setting& s, Config& c);

[[nodiscard]] const std::vector<Setting>& settings();

}  // namespace outbox::relay::config::detail
