#include "relay/http/http_server.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <memory>

#include "relay/core/errors.hpp"

namespace outbox::relay::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace detail {

// One connection: read a request, answer it, close.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(tcp::socket socket, const HttpHandler& handler, std::shared_ptr<std::atomic<std::size_t>> open)
      : stream_(std::move(socket)), handler_(handler), open_(std::move(open)) {
    ++*open_;
  }
  ~Exchange() { --*open_; }
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // Closes the connection now (the pending read completes with an error).
  void evict() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  void start() {
    stream_.expires_after(std::chrono::seconds(5));
    bhttp::async_read(stream_, buffer_, request_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

 private:
  void on_read(beast::error_code ec) {
    if (ec) return;
    HttpResponse r;
    if (request_.method() != bhttp::verb::get && request_.method() != bhttp::verb::head) {
      r = {405, "text/plain; charset=utf-8", "only GET\n"};
    } else {
      std::string path(request_.target());
      if (auto q = path.find('?'); q != std::string::npos) path.resize(q);
      r = handler_(path);
    }
    response_.version(request_.version());
    response_.result(static_cast<unsigned>(r.status));
    response_.set(bhttp::field::server, "outbox-relay");
    response_.set(bhttp::field::content_type, r.content_type);
    response_.keep_alive(false);
    if (request_.method() != bhttp::verb::head) response_.body() = std::move(r.body);
    response_.prepare_payload();
    bhttp::async_write(stream_, response_, [self = shared_from_this()](beast::error_code, std::size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  beast::tcp_stream stream_;
  const HttpHandler& handler_;
  std::shared_ptr<std::atomic<std::size_t>> open_;
  beast::flat_buffer buffer_;
  bhttp::request<bhttp::string_body> request_;
  bhttp::response<bhttp::string_body> response_;
};

}  // namespace detail

using detail::Exchange;

HttpServer::HttpServer(boost::asio::io_context& io, const tcp::endpoint& endpoint, HttpHandler handler,
                       std::size_t max_connections)
    : io_(io), acceptor_(io), handler_(std::move(handler)), max_connections_(max_connections) {
  boost::system::error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw ConfigError("http.listen: cannot listen on " + endpoint.address().to_string() + ":" +
                      std::to_string(endpoint.port()) + " (" + ec.message() + ")");
  accept();
}

unsigned short HttpServer::port() const { return acceptor_.local_endpoint().port(); }

void HttpServer::accept() {
  acceptor_.async_accept(io_, [this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (!ec) {
      // At the cap the oldest open connection goes (a request that has not arrived in the
      // time the newer ones took): probes keep working while idle connections pile up.
      std::erase_if(exchanges_, [](const auto& w) { return w.expired(); });
      while (exchanges_.size() >= max_connections_) {
        if (auto oldest = exchanges_.front().lock()) oldest->evict();
        exchanges_.pop_front();
        ++refused_total_;
      }
      auto exchange = std::make_shared<Exchange>(std::move(socket), handler_, open_);
      exchanges_.push_back(exchange);
      exchange->start();
    }
    accept();
  });
}

}  // namespace outbox::relay::http
