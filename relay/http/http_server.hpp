// A small HTTP/1.1 server on the relay's Asio loop (Boost.Beast) for probes and scrapes:
// GET only, one request per connection, handler decides status and body.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

namespace outbox::relay::http {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpResponse(const std::string& path)>;

namespace detail {
class Exchange;  // one connection
}

class HttpServer {
 public:
  // Throws ConfigError naming http.listen when `endpoint` cannot be bound. At most `max_connections` connections are open at once (a request has
  // 5 s to arrive); a new one beyond that closes the oldest, which is counted.
  HttpServer(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& endpoint, HttpHandler handler,
             std::size_t max_connections);

  [[nodiscard]] unsigned short port() const;
  [[nodiscard]] std::uint64_t refused_total() const { return refused_total_; }

 private:
  void accept();

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  HttpHandler handler_;
  std::size_t max_connections_;
  std::shared_ptr<std::atomic<std::size_t>> open_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::deque<std::weak_ptr<detail::Exchange>> exchanges_;  // open connections, oldest first
  std::atomic<std::uint64_t> refused_total_{0};
};

}  // namespace outbox::relay::http
