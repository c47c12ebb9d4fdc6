#include "relay/http/listen_address.hpp"

#include <algorithm>

#include "relay/core/errors.hpp"

namespace outbox::relay::http {

using tcp = boost::asio::ip::tcp;

tcp::endpoint parse_listen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size())
    throw ConfigError("http.listen: expected host:port or :port, got \"" + listen + "\"");
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string digits = listen.substr(colon + 1);
  long port = -1;
  if (digits.size() <= 5 && std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    port = std::stol(digits);
  if (port < 0 || port > 65535)
    throw ConfigError("http.listen: the port must be a number 0..65535, got \"" + digits + "\"");
  if (host.empty()) host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(host, ec);
  if (ec)
    throw ConfigError("http.listen: \"" + host + "\" is not an IP address (use 127.0.0.1, localhost, 0.0.0.0, :: or :port)");
  return {addr, static_cast<unsigned short>(port)};
}

}  // namespace outbox::relay::http
