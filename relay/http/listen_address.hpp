// http.listen as the HTTP endpoint binds it, parsed once with the rest of the configuration.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <string>

namespace outbox::relay::http {

// "host:port", "[v6]:port", ":port" (every interface) or "localhost:port" (127.0.0.1); the
// port 0..65535 (0: any free one). Throws ConfigError naming http.listen.
[[nodiscard]] boost::asio::ip::tcp::endpoint parse_listen(const std::string& listen);

}  // namespace outbox::relay::http
