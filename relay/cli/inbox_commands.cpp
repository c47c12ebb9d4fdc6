#include "relay/cli/inbox_commands.hpp"

#include <nlohmann/json.hpp>

#include <iostream>
#include <regex>

#include "relay/app/exit_codes.hpp"
#include "relay/app/settings.hpp"
#include "relay/cli/command_context.hpp"
#include "relay/cli/console_format.hpp"
#include "relay/core/errors.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_inbox_admin.hpp"
#include "relay/pg/sql_text.hpp"

namespace outbox::relay::cli {
namespace {

using app::kExitConfig;
using app::kExitFailure;
using app::kExitUsage;

// "<seq>" or "<event id>": a positive integer is a seq unless prefixed "id:".
struct Ref {
  std::optional<std::int64_t> seq;
  std::optional<std::string> event_id;
};
Ref parse_ref(const std::string& text) {
  static const std::regex digits("[0-9]{1,18}");
  if (text.starts_with("id:")) return {std::nullopt, text.substr(3)};
  if (std::regex_match(text, digits) && std::stoll(text) > 0) return {std::stoll(text), std::nullopt};
  if (text.empty()) throw usage_error("an empty event reference (give a seq, or an event id)");
  return {std::nullopt, text};
}

Json bytes_json(const std::optional<std::string>& b) {
  if (!b) return nullptr;
  const bool text = printable_utf8(*b);
  return Json{{"size", b->size()}, {"encoding", text ? "utf-8" : "base64"}, {"data", text ? *b : base64(*b)}};
}

Json to_json(const pg::InboxEventRow& e) {
  auto headers = Json::parse(e.headers, nullptr, false);
  return Json{{"seq", e.seq},
              {"event_id", e.event_id},
              {"topic", e.topic},
              {"partition", e.partition},
              {"offset", e.offset},
              {"key", bytes_json(e.key)},
              {"event_type", json_or_null(e.event_type)},
              {"headers", headers.is_discarded() ? Json(e.headers) : headers},
              {"payload", bytes_json(e.payload)},
              {"received_at", e.received_at},
              {"processed_at", json_or_null(e.processed_at)},
              {"attempts", e.attempts},
              {"next_attempt_at", json_or_null(e.next_attempt_at)},
              {"last_error", json_or_null(e.last_error)},
              {"dead_lettered_at", json_or_null(e.dead_lettered_at)}};
}

std::string shown_key(const std::optional<std::string>& key) {
  if (!key) return "-";
  return printable_utf8(*key) ? cell(*key, 30) : "base64:" + cell(base64(*key), 30);
}

void print_rows(const std::vector<pg::InboxEventRow>& rows) {
  std::vector<std::vector<std::string>> table;
  for (const auto& e : rows)
    table.push_back({std::to_string(e.seq), cell(e.event_id, 40), e.topic + "/" + std::to_string(e.partition) + "@" +
                                                                        std::to_string(e.offset),
                     shown_key(e.key), cell(e.event_type.value_or("-"), 24), std::to_string(e.attempts),
                     e.dead_lettered_at.value_or("-"), cell(e.last_error.value_or("-"), 50)});
  print_table({"SEQ", "EVENT ID", "FROM", "KEY", "EVENT TYPE", "ATTEMPTS", "DEAD-LETTERED AT", "LAST ERROR"}, table);
}

int run_status(pg::PgInboxAdmin& admin, const config::Config& c, bool json) {
  const auto s = admin.status();
  if (json) {
    Json sources = Json::array();
    for (const auto& src : s.sources)
      sources.push_back({{"topic", src.topic}, {"partition", src.partition}, {"last_offset", src.last_offset},
                         {"rows", src.rows}});
    print_json(Json{{"inbox", c.inbox.name},
                    {"rows", s.rows},
                    {"processed", s.processed},
                    {"pending", s.backlog.pending},
                    {"retrying", s.backlog.retrying},
                    {"dead_lettered", s.backlog.dead_lettered},
                    {"held_back", s.backlog.held_back},
                    {"oldest_unprocessed_age_s", s.backlog.oldest_age_s},
                    {"last_received_at", json_or_null(s.last_received_at)},
                    {"last_processed_at", json_or_null(s.last_processed_at)},
                    {"sources", sources}});
    return 0;
  }
  std::cout << "inbox " << c.inbox.name << " in " << c.database.schema << ".inbox_events\n";
  print_table({"PENDING", "RETRYING", "DEAD-LETTERED", "HELD BACK", "OLDEST UNPROCESSED", "PROCESSED", "ROWS"},
              {{std::to_string(s.backlog.pending), std::to_string(s.backlog.retrying),
                std::to_string(s.backlog.dead_lettered), std::to_string(s.backlog.held_back),
                duration(s.backlog.oldest_age_s), std::to_string(s.processed), std::to_string(s.rows)}});
  std::cout << "last landed " << s.last_received_at.value_or("never") << ", last processed "
            << s.last_processed_at.value_or("never") << "\n";
  if (!s.sources.empty()) {
    std::vector<std::vector<std::string>> table;
    for (const auto& src : s.sources)
      table.push_back({src.topic, std::to_string(src.partition), std::to_string(src.last_offset), std::to_string(src.rows)});
    print_table({"TOPIC", "PARTITION", "LAST OFFSET LANDED", "ROWS"}, table);
  }
  if (s.backlog.dead_lettered > 0)
    std::cout << count_of(s.backlog.dead_lettered, "dead-lettered event") << " holding "
              << count_of(s.backlog.held_back, "later event")
              << " back: `outbox-relay inbox dead-letters list`, then requeue or skip\n";
  return 0;
}

std::vector<std::int64_t> resolve(pg::PgInboxAdmin& admin, const std::vector<std::string>& refs) {
  std::vector<std::int64_t> seqs;
  std::vector<std::string> ids, missing;
  for (const auto& r : refs) {
    auto ref = parse_ref(r);
    if (ref.seq)
      seqs.push_back(*ref.seq);
    else
      ids.push_back(*ref.event_id);
  }
  if (!ids.empty()) {
    auto found = admin.seqs_of(ids);
    if (found.size() < ids.size()) throw nothing_matched("nothing changed: some event ids are not in this inbox");
    seqs.insert(seqs.end(), found.begin(), found.end());
  }
  return seqs;
}

int run_change(pg::PgInboxAdmin& admin, const std::vector<std::string>& refs, bool all, bool skip, bool json) {
  const std::string verb = skip ? "skip" : "requeue";
  if (all && !refs.empty()) throw usage_error("give event seqs/ids or --all, not both");
  if (!all && refs.empty()) throw usage_error("name the dead-lettered events to " + verb + " (seq or event id), or --all");
  std::vector<std::int64_t> seqs;
  if (all) {
    for (const auto& e : admin.dead_letters(0).first) seqs.push_back(e.seq);
  } else {
    seqs = resolve(admin, refs);
  }
  const auto changed = seqs.empty() ? std::vector<std::int64_t>{} : skip ? admin.skip(seqs) : admin.requeue(seqs);
  if (!all && changed.size() < seqs.size()) {
    std::string msg = "these do not name a dead-lettered event of this inbox:";
    for (auto s : seqs)
      if (std::find(changed.begin(), changed.end(), s) == changed.end()) msg += " " + std::to_string(s);
    if (!changed.empty()) msg += " (the others were " + std::string(skip ? "skipped" : "requeued") + ")";
    throw nothing_matched(msg);
  }
  if (json) {
    print_json(Json{{skip ? "skipped" : "requeued", changed}});
    return 0;
  }
  if (changed.empty()) {
    std::cout << "no dead-lettered events to " << verb << "\n";
    return 0;
  }
  std::cout << (skip ? "skipped " : "requeued ") << count_of(static_cast<long long>(changed.size()), "event") << "; "
            << (skip ? "marked processed without their effect (the rows stay as the record); the later events of "
                       "their aggregates flow again"
                     : "the workers claim each again before the later events of its aggregate")
            << "\n";
  return 0;
}

}  // namespace

InboxCommands::InboxCommands(CLI::App& inbox, const std::function<void(CLI::App*)>& common) {
  auto with = [&](CLI::App* sub) {
    common(sub);
    sub->add_flag("--json", json_, "Print JSON for scripts");
    return sub;
  };
  status_ = with(inbox.add_subcommand("status", "Backlog of the inbox: pending, retrying, dead-lettered, held back, "
                                                "what landed from each partition"));
  dead_letters_ = inbox.add_subcommand("dead-letters", "List, show, requeue or skip events the workers dead-lettered");
  dead_letters_->require_subcommand(1);
  list_ = with(dead_letters_->add_subcommand("list", "Dead-lettered events in seq order"));
  list_->add_option("--limit", limit_, "At most this many rows (0: all)")->check(CLI::NonNegativeNumber)->capture_default_str();
  show_ = with(dead_letters_->add_subcommand("show", "Every column of one event, payload included"));
  show_->add_option("event", events_, "seq, or event id (id:<id> for an id made of digits)")->required()->expected(1);
  requeue_ = with(dead_letters_->add_subcommand("requeue", "Make dead-lettered events pending again, attempts reset"));
  requeue_->add_option("events", events_, "seqs or event ids");
  requeue_->add_flag("--all", all_, "Every dead-lettered event of the inbox");
  skip_ = with(dead_letters_->add_subcommand("skip", "Give up on dead-lettered events: processed without their effect"));
  skip_->add_option("events", events_, "seqs or event ids");
  skip_->add_flag("--all", all_, "Every dead-lettered event of the inbox");
}

bool InboxCommands::selected() const { return status_->parsed() || dead_letters_->parsed(); }

int InboxCommands::run(const config::Config& config) const {
  std::string name = status_->parsed() ? "inbox status" : "inbox dead-letters";
  for (auto* sub : {list_, show_, requeue_, skip_})
    if (sub->parsed()) name += " " + sub->get_name();
  auto fail = [&](std::string msg, int code) {
    while (!msg.empty() && std::isspace(static_cast<unsigned char>(msg.back()))) msg.pop_back();
    std::cerr << "outbox-relay " << name << ": " << pg::redact_conninfo(msg) << "\n";
    return code;
  };
  try {
    const auto db = app::connection_settings(config);
    pg::PgInboxAdmin admin(db.conninfo("inbox-cli"), config.database.schema, config.inbox.name);
    if (status_->parsed()) return run_status(admin, config, json_);
    if (list_->parsed()) {
      auto [rows, total] = admin.dead_letters(limit_);
      if (json_) {
        Json out = Json::array();
        for (const auto& e : rows) out.push_back(to_json(e));
        print_json(Json{{"total", total}, {"events", out}});
        return 0;
      }
      if (rows.empty()) {
        std::cout << "no dead-lettered events in inbox " << config.inbox.name << "\n";
        return 0;
      }
      print_rows(rows);
      std::cout << rows.size() << " of " << count_of(total, "dead-lettered event")
                << (static_cast<std::int64_t>(rows.size()) < total ? " (raise --limit to see more)" : "") << "\n";
      return 0;
    }
    if (show_->parsed()) {
      const auto ref = parse_ref(events_.at(0));
      auto found = admin.find(ref.seq, ref.event_id);
      if (!found) throw nothing_matched("no event " + events_.at(0) + " in inbox " + config.inbox.name);
      if (json_) {
        print_json(to_json(*found));
        return 0;
      }
      print_json(to_json(*found));  // every column; JSON is the readable form of bytes and headers
      return 0;
    }
    return run_change(admin, events_, all_, skip_->parsed(), json_);
  } catch (const CommandError& e) {
    return fail(e.what(), e.exit_code());
  } catch (const ConfigError& e) {
    return fail(e.what(), kExitConfig);
  } catch (const TransientError& e) {
    return fail(std::string("database unavailable: ") + e.what(), kExitFailure);
  } catch (const std::exception& e) {
    return fail(e.what(), kExitFailure);
  }
}

}  // namespace outbox::relay::cli
