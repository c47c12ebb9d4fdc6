#include "relay/config/settings_table.hpp"

#include <algorithm>

namespace outbox::relay::config::detail {
namespace {

Setting text(std::string key, std::function<std::string&(Config&)> f, std::string doc, bool secret = false) {
  return Setting{std::move(key), Kind::text, std::move(doc), std::move(f), {}, {}, {}, {}, 0, 0, secret};
}
Setting integer(std::string key, std::function<int&(Config&)> f, int min, int max, std::string doc) {
  return Setting{std::move(key), Kind::integer, std::move(doc), {}, std::move(f), {}, {}, {}, min, max, false};
}
Setting choice_of(std::string key, std::vector<std::string> choices, std::string doc,
                  std::function<std::size_t(Config&)> chosen, std::function<void(Config&, std::size_t)> choose) {
  Setting s{std::move(key), Kind::choice, std::move(doc)};
  s.choices = std::move(choices);
  s.chosen = std::move(chosen);
  s.choose = std::move(choose);
  return s;
}
// A string choice kept as text (log.level).
Setting choice(std::string key, std::function<std::string&(Config&)> f, std::vector<std::string> choices,
               std::string doc) {
  auto names = choices;
  return choice_of(
      std::move(key), std::move(choices), std::move(doc),
      [f, names](Config& c) { return static_cast<std::size_t>(std::find(names.begin(), names.end(), f(c)) - names.begin()); },
      [f, names](Config& c, std::size_t i) { f(c) = names.at(i); });
}
// A choice kept as an enum whose values follow `choices` in order.
template <class E>
Setting choice(std::string key, E& (*f)(Config&), std::vector<std::string> choices, std::string doc) {
  return choice_of(
      std::move(key), std::move(choices), std::move(doc), [f](Config& c) { return static_cast<std::size_t>(f(c)); },
      [f](Config& c, std::size_t i) { f(c) = static_cast<E>(i); });
}

}  // namespace

std::string shown(const Setting& s, Config& c) {
  switch (s.kind) {
    case Kind::integer:
      return std::to_string(s.integer(c));
    case Kind::choice:
      return s.choices.at(s.chosen(c));
    case Kind::text:
      break;
  }
  return s.text(c);
}

const std::vector<Setting>& settings() {
  static const std::vector<Setting> table{
      text("database.url", [](Config& c) -> std::string& { return c.database.url; },
           "PostgreSQL connection string (URI or key=value). Empty: libpq's PG* environment "
           "variables. Prefer database.password_file or a passfile to a password in the URL.",
           true),
      text("database.password_file", [](Config& c) -> std::string& { return c.database.password_file; },
           "File whose first line is the database password (systemd LoadCredential, Kubernetes Secret)."),
      text("database.schema", [](Config& c) -> std::string& { return c.database.schema; },
           "Schema holding outbox_events."),
      text("database.application_name", [](Config& c) -> std::string& { return c.database.application_name; },
           "application_name of the relay's sessions (find them in pg_stat_activity)."),
      integer("database.statement_timeout_ms", [](Config& c) -> int& { return c.database.statement_timeout_ms; },
              100, 3'600'000, "Server-side statement timeout of the relay's sessions."),
      choice<SinkType>("sink.type", [](Config& c) -> SinkType& { return c.sink.type; }, {"kafka", "nats"},
             "The broker the relay publishes to: kafka (kafka.*) or nats, NATS JetStream (nats.*). The "
             "message.* settings name the headers on either."),
      text("kafka.brokers", [](Config& c) -> std::string& { return c.kafka.brokers; },
           "Bootstrap servers, host:port[,host:port...]. Required with sink.type kafka."),
      text("kafka.client_id", [](Config& c) -> std::string& { return c.kafka.client_id; }, "Kafka client.id."),
      integer("kafka.delivery_timeout_ms", [](Config& c) -> int& { return c.kafka.delivery_timeout_ms; }, 1000,
              3'600'000,
              "How long librdkafka tries to deliver a message before reporting it failed "
              "(message.timeout.ms); the row is then retried, never marked."),
      text("kafka.topic_template", [](Config& c) -> std::string& { return c.kafka.topic_template; },
           "Topic for a row without its own topic. Placeholders: ${aggregate_type}, ${event_type}."),
      text("kafka.row_topic_pattern", [](Config& c) -> std::string& { return c.kafka.row_topic_pattern; },
           "Regular expression a row's own topic column must match in full (e.g. orders\\..*); a row "
           "outside it is failed as a bad row. Empty: any valid topic name."),
      text("nats.url", [](Config& c) -> std::string& { return c.nats.url; },
           "NATS server URLs, nats://host:port[,nats://host:port...]. The relay reconnects without end."),
      text("nats.name", [](Config& c) -> std::string& { return c.nats.name; },
           "Connection name the server shows (connz)."),
      text("nats.subject_template", [](Config& c) -> std::string& { return c.nats.subject_template; },
           "Subject for a row without its own topic column. Placeholders: ${aggregate_type}, ${event_type}. "
           "A JetStream stream must capture it: a subject no stream captures fails the row permanently."),
      integer("nats.ack_timeout_ms", [](Config& c) -> int& { return c.nats.ack_timeout_ms; }, 100, 600'000,
              "How long a message waits for its stream's acknowledgement; then it is a transient failure and "
              "the row is sent again (Nats-Msg-Id makes the stream drop it if the first one was stored)."),
      integer("nats.connect_timeout_ms", [](Config& c) -> int& { return c.nats.connect_timeout_ms; }, 100, 60'000,
              "Timeout of one connection attempt."),
      text("nats.key_header", [](Config& c) -> std::string& { return c.nats.key_header; },
           "Header carrying the aggregate id (NATS messages have no key). A row may not set it."),
      text("nats.credentials_file", [](Config& c) -> std::string& { return c.nats.credentials_file; },
           "A .creds file (user JWT and nkey seed); empty: none."),
      text("nats.user", [](Config& c) -> std::string& { return c.nats.user; }, "User for user/password auth."),
      text("nats.password", [](Config& c) -> std::string& { return c.nats.password; },
           "Password for nats.user.", true),
      text("nats.token", [](Config& c) -> std::string& { return c.nats.token; }, "Token auth; empty: none.", true),
      choice<MessageFormat>("message.format", [](Config& c) -> MessageFormat& { return c.message.format; },
                            {"debezium", "cloudevents"},
                            "Message shape: debezium (Debezium's outbox event router: id and eventType headers) or "
                            "cloudevents (CloudEvents 1.0 binary mode: ce_id, ce_type, ce_source, ce_specversion, "
                            "ce_subject and content-type headers; ce- on NATS)."),
      text("message.cloudevents_source", [](Config& c) -> std::string& { return c.message.cloudevents_source; },
           "CloudEvents source attribute, a URI-reference template with ${aggregate_type} and ${event_type} "
           "(values percent-encoded). message.format cloudevents only."),
      text("message.content_type", [](Config& c) -> std::string& { return c.message.content_type; },
           "CloudEvents content-type of the data when the row has no content-type header of its own. "
           "message.format cloudevents only."),
      text("message.id_header", [](Config& c) -> std::string& { return c.message.id_header; },
           "Header carrying the event id (message.format debezium)."),
      text("message.event_type_header", [](Config& c) -> std::string& { return c.message.event_type_header; },
           "Header carrying the event type; empty to leave it out (message.format debezium)."),
      text("message.publisher_header", [](Config& c) -> std::string& { return c.message.publisher_header; },
           "Kafka header naming the instance, lane and lease epoch that sent the message "
           "(\"<instance> lane=<n> epoch=<e>\"); empty to leave it out."),
      integer("relay.batch_size", [](Config& c) -> int& { return c.relay.batch_size; }, 1, 100'000,
              "Rows fetched, published and marked per batch."),
      choice<Wakeup>("relay.wakeup", [](Config& c) -> Wakeup& { return c.relay.wakeup; }, {"notify", "poll"},
             "notify: LISTEN for a hint that producers send only while the relay is idle; poll: "
             "poll_interval_ms only."),
      choice<MarkMode>("relay.mark_mode", [](Config& c) -> MarkMode& { return c.relay.mark_mode; }, {"update", "delete"},
             "update: set published_at (keeps history); delete: remove the row once acknowledged "
             "(less WAL, no history; needs DELETE privilege)."),
      integer("relay.poll_interval_ms", [](Config& c) -> int& { return c.relay.poll_interval_ms; }, 1, 600'000,
              "Longest wait of an idle relay before it looks again (NOTIFY is only a hint)."),
      integer("relay.linger_ms", [](Config& c) -> int& { return c.relay.linger_ms; }, 0, 10'000,
              "Pause after a partial batch so the next one is not a handful of rows."),
      integer("relay.rescan_interval_ms", [](Config& c) -> int& { return c.relay.rescan_interval_ms; }, 10,
              600'000,
              "While busy, the relay reads ahead of its last batch; at least this often it scans "
              "from the oldest unpublished row again, which bounds how long a late-committing row waits."),
      integer("relay.max_attempts", [](Config& c) -> int& { return c.relay.max_attempts; }, 1, 1'000'000,
              "Permanent failures of a row (too large, rejected topic, bad row) before it is dead-lettered."),
      integer("relay.retry_initial_ms", [](Config& c) -> int& { return c.relay.retry_initial_ms; }, 1,
              86'400'000, "First delay before a permanently failed row is tried again (doubles each attempt)."),
      integer("relay.retry_max_ms", [](Config& c) -> int& { return c.relay.retry_max_ms; }, 1, 86'400'000,
              "Longest delay between attempts of a failing row."),
      integer("relay.shutdown_timeout_ms", [](Config& c) -> int& { return c.relay.shutdown_timeout_ms; }, 0,
              3'600'000,
              "On SIGTERM, how long to wait for the broker to acknowledge what is in flight and to mark it; "
              "then the rest is abandoned (left unpublished, sent again by the next owner) and the relay "
              "exits. 0: abandon what is in flight at once."),
      integer("retention.published_hours", [](Config& c) -> int& { return c.retention.published_hours; }, 0,
              87'600,
              "Published rows older than this are deleted, in small batches; 0 keeps them. This is also "
              "how far back `replay` can reach. Nothing to do with relay.mark_mode=delete."),
      integer("retention.inbox_hours", [](Config& c) -> int& { return c.retention.inbox_hours; }, 0, 87'600,
              "When consumers keep their consumer_inbox in this database and schema, the relay purges rows "
              "processed longer ago than this; 0 leaves it to the consumers (outbox::purge_inbox). Must be "
              "longer than the longest possible redelivery or replay."),
      integer("retention.interval_s", [](Config& c) -> int& { return c.retention.interval_s; }, 1, 86'400,
              "Seconds between retention passes."),
      integer("retention.batch_size", [](Config& c) -> int& { return c.retention.batch_size; }, 1, 100'000,
              "Rows deleted per short transaction (each batch commits; no long locks)."),
      text("ownership.instance_id", [](Config& c) -> std::string& { return c.ownership.instance_id; },
           "This instance's name in outbox_relay_instances and outbox_relay_lanes. Empty: the pod name "
           "(POD_NAME, or the host name in Kubernetes), else host:unit under systemd, else the host name, "
           "with #2..#8 for more processes on one host; so a restarted process takes its own lanes back at "
           "once. A live process holds its id (an advisory lock): a second one given the same id waits."),
      integer("ownership.lease_ttl_ms", [](Config& c) -> int& { return c.ownership.lease_ttl_ms; }, 2'000,
              600'000,
              "Lease of a lane (by the database's clock). An instance that stops renewing (killed, paused, "
              "cut off) loses its lanes this long after its last renewal; the others then take them over. "
              "It stops publishing a tenth of this earlier, by its own clock."),
      integer("ownership.renew_interval_ms", [](Config& c) -> int& { return c.ownership.renew_interval_ms; }, 100,
              300'000,
              "How often leases are renewed and the fair share recomputed; at most 0.45 of "
              "ownership.lease_ttl_ms. Joins, departures and lanes handed back are noticed at once (NOTIFY)."),
      text("inbox.name", [](Config& c) -> std::string& { return c.inbox.name; },
           "Inbox sidecar: the inbox's name in inbox_events (several inboxes may share the table)."),
      text("inbox.topics", [](Config& c) -> std::string& { return c.inbox.topics; },
           "Inbox sidecar: topics to consume, comma-separated. Required for `inbox run`."),
      text("inbox.group_id", [](Config& c) -> std::string& { return c.inbox.group_id; },
           "Inbox sidecar: Kafka consumer group. Empty: outbox-inbox-<inbox.name>. Sidecars of one group "
           "share the partitions."),
      text("inbox.event_id_header", [](Config& c) -> std::string& { return c.inbox.event_id_header; },
           "Inbox sidecar: header carrying the event id (the relay's message.id_header). A message with "
           "more than one, or one without a value, is dead-lettered."),
      text("inbox.event_type_header", [](Config& c) -> std::string& { return c.inbox.event_type_header; },
           "Inbox sidecar: header carrying the event type (inbox_events.event_type); empty: none."),
      choice<MissingId>("inbox.missing_id", [](Config& c) -> MissingId& { return c.inbox.missing_id; },
             {"dead_letter", "position"},
             "Inbox sidecar: a message without an event id header is dead-lettered, or given the id "
             "kafka:<topic>/<partition>/<offset> (a redelivery of the same message keeps it and is absorbed; "
             "the same event published twice is not)."),
      text("inbox.dead_letter_topic", [](Config& c) -> std::string& { return c.inbox.dead_letter_topic; },
           "Inbox sidecar: topic for messages the inbox cannot store (too large, undecodable, ambiguous id). "
           "Empty: <source topic>.dlq."),
      integer("inbox.batch_size", [](Config& c) -> int& { return c.inbox.batch_size; }, 1, 100'000,
              "Inbox sidecar: messages landed per transaction."),
      integer("inbox.linger_ms", [](Config& c) -> int& { return c.inbox.linger_ms; }, 0, 10'000,
              "Inbox sidecar: how long a started batch waits to fill before it lands."),
      integer("inbox.max_message_bytes", [](Config& c) -> int& { return c.inbox.max_message_bytes; }, 1'024,
              1 << 30, "Inbox sidecar: larger messages (key, value and headers) are dead-lettered."),
      integer("inbox.commit_interval_ms", [](Config& c) -> int& { return c.inbox.commit_interval_ms; }, 10,
              600'000,
              "Inbox sidecar: how often offsets of landed batches are committed to the group (also on a "
              "rebalance and at shutdown). Longer: more redeliveries after a crash, all absorbed."),
      integer("inbox.shutdown_timeout_ms", [](Config& c) -> int& { return c.inbox.shutdown_timeout_ms; }, 0,
              3'600'000,
              "Inbox sidecar: on SIGTERM, how long to keep trying to land what is held before committing "
              "what landed and exiting 0."),
      integer("inbox.retention_hours", [](Config& c) -> int& { return c.inbox.retention_hours; }, 0, 87'600,
              "Inbox sidecar: processed inbox rows are deleted this long after processing; 0 keeps them. It "
              "must outlast any redelivery or replay (the topics' retention): a message redelivered after its "
              "row is gone lands again and is processed twice."),
      integer("inbox.topic_retention_hours", [](Config& c) -> int& { return c.inbox.topic_retention_hours; }, 0,
              87'600,
              "Inbox sidecar: the topics' retention.ms in hours, when known (0: unknown). A shorter "
              "inbox.retention_hours is refused."),
      text("http.listen", [](Config& c) -> std::string& { return c.http.listen; },
           "host:port serving /healthz (alive), /readyz (database and broker reached recently) and "
           "/metrics (Prometheus). Loopback by default; 0.0.0.0:9464 in a container. Empty: no HTTP."),
      choice("log.level", [](Config& c) -> std::string& { return c.log.level; }, {"debug", "info", "warn", "error"},
             "Lowest level written."),
      choice<LogFormat>("log.format", [](Config& c) -> LogFormat& { return c.log.format; }, {"json", "text"},
             "json: one JSON object per line; text: key=value for terminals."),
  };
  return table;
}

}  // namespace outbox::relay::config::detail
