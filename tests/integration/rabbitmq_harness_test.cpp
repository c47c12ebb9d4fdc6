// The RabbitMQ test harness against the real rabbitmq-server: it starts as its own node on free
// loopback ports, takes a persistent message with a publisher confirm, keeps it through a
// SIGKILL and a restart on the same data, and leaves no process behind.
#include <catch2/catch.hpp>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <signal.h>

#include <chrono>
#include <optional>
#include <string>

#include "tests/support/eventually.hpp"
#include "tests/support/server_process.hpp"

using namespace std::chrono_literals;

namespace {

void ok_reply(amqp_rpc_reply_t r, const char* what) {
  INFO(what);
  REQUIRE(r.reply_type == AMQP_RESPONSE_NORMAL);
}

// One connection, channel 1 in confirm mode.
class Amqp {
 public:
  explicit Amqp(int port) {
    conn_ = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(conn_);
    REQUIRE(socket != nullptr);
    REQUIRE(amqp_socket_open(socket, "127.0.0.1", port) == AMQP_STATUS_OK);
    ok_reply(amqp_login(conn_, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
    amqp_channel_open(conn_, 1);
    ok_reply(amqp_get_rpc_reply(conn_), "channel.open");
    amqp_confirm_select(conn_, 1);
    ok_reply(amqp_get_rpc_reply(conn_), "confirm.select");
  }
  ~Amqp() {
    amqp_channel_close(conn_, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn_);
  }
  void declare_durable(const std::string& queue) {
    amqp_queue_declare(conn_, 1, amqp_cstring_bytes(queue.c_str()), 0, /*durable*/ 1, 0, 0, amqp_empty_table);
    ok_reply(amqp_get_rpc_reply(conn_), "queue.declare");
  }
  // Publishes persistent and mandatory to the default exchange; true once the broker confirms.
  bool publish_confirmed(const std::string& queue, const std::string& body, const std::string& message_id) {
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    props.delivery_mode = 2;
    props.message_id = amqp_cstring_bytes(message_id.c_str());
    if (amqp_basic_publish(conn_, 1, amqp_empty_bytes, amqp_cstring_bytes(queue.c_str()), 1, 0, &props,
                           amqp_cstring_bytes(body.c_str())) != AMQP_STATUS_OK)
      return false;
    amqp_frame_t frame;
    timeval tv{10, 0};
    if (amqp_simple_wait_frame_noblock(conn_, &frame, &tv) != AMQP_STATUS_OK) return false;
    return frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_ACK_METHOD;
  }
  // basic.get with auto-ack: the body and message_id of the next message, if any.
  std::optional<std::pair<std::string, std::string>> get(const std::string& queue) {
    amqp_rpc_reply_t r = amqp_basic_get(conn_, 1, amqp_cstring_bytes(queue.c_str()), 1);
    ok_reply(r, "basic.get");
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD) return std::nullopt;
    amqp_message_t m;
    ok_reply(amqp_read_message(conn_, 1, &m, 0), "read message");
    std::pair<std::string, std::string> out{std::string(static_cast<char*>(m.body.bytes), m.body.len),
                                            std::string(static_cast<char*>(m.properties.message_id.bytes),
                                                        m.properties.message_id.len)};
    amqp_destroy_message(&m);
    return out;
  }

 private:
  amqp_connection_state_t conn_;
};

// A process of the group is left (zombies of it included).
bool group_alive(int pgid) { return pgid > 0 && ::kill(-pgid, 0) == 0; }

}  // namespace

TEST_CASE("rabbitmq harness: its own node on free ports, a confirmed persistent message survives SIGKILL and restart",
          "[rabbitmq][harness]") {
  int first = -1, second = -1;
  {
    outbox::test::RabbitServer server;
    first = server.process().pid();
    {
      Amqp c(server.port());
      c.declare_durable("harness");
      REQUIRE(c.publish_confirmed("harness", "payload-1", "event-1"));
    }
    server.process().kill();
    // The node itself is gone (not only the script that started it), so what follows is read
    // from a new node on the same data.
    CHECK_FALSE(outbox::test::loopback_accepts(server.port()));
    CHECK(outbox::test::eventually([&] { return !group_alive(first); }, 10s));
    server.process().start(90s);
    second = server.process().pid();
    Amqp c(server.port());
    const auto m = c.get("harness");
    REQUIRE(m.has_value());
    CHECK(m->first == "payload-1");
    CHECK(m->second == "event-1");
    CHECK_FALSE(c.get("harness").has_value());
  }
  // The node went with the harness.
  CHECK(outbox::test::eventually([&] { return !group_alive(second); }, 10s));
}
