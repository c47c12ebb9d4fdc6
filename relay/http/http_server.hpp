// A small HTTP/1.1 server on the relay's Asio loop (Boost.Beast) for probes and scrapes:
// GET only, one request per connection, handler decides status and body.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <string>

namespace outbox::relay::http {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpResponse(const std::string& path)>;

class HttpServer {
 public:
  // `listen` is host:port (e.g. 127.0.0.1:9464, 0.0.0.0:9464). Throws ConfigError naming
  // http.listen when it cannot be parsed or bound.
  HttpServer(boost::asio::io_context& io, const std::string& listen, HttpHandler handler);

  [[nodiscard]] unsigned short port() const;

 private:
  void accept();

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  HttpHandler handler_;
};

}  // namespace outbox::relay::http
