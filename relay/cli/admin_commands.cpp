#include "relay/cli/admin_commands.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <regex>

#include "outbox/common/text_checks.hpp"
#include "relay/app/exit_codes.hpp"
#include "relay/app/settings.hpp"
#include "relay/cli/command_context.hpp"
#include "relay/cli/console_format.hpp"
#include "relay/core/errors.hpp"
#include "relay/pg/pg_admin.hpp"
#include "relay/pg/pg_conninfo.hpp"
#include "relay/pg/pg_outbox_store.hpp"
#include "relay/pg/pg_status.hpp"

namespace outbox::relay::cli {

using namespace app;  // exit codes, connection settings
namespace {

// ---- parsing the operator's input -------------------------------------------------------

std::int64_t parse_seq(const std::string& text, const std::string& what) {
  static const std::regex digits("[0-9]{1,18}");
  if (!std::regex_match(text, digits) || std::stoll(text) == 0)
    throw usage_error(what + ": \"" + text + "\" is not a seq (a positive integer)");
  return std::stoll(text);
}

// "<seq|uuid>" -> one of refs' lists; UUIDs lower-cased as PostgreSQL prints them.
void add_event_ref(const std::string& text, pg::EventRefs& refs) {
  if (common::looks_like_uuid(text)) {
    std::string id = text;
    std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return std::tolower(c); });
    refs.ids.push_back(id);
  } else if (!text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); })) {
    refs.seqs.push_back(parse_seq(text, "event"));
  } else {
    throw usage_error("\"" + text + "\" is neither a seq (a positive integer) nor an event id (a UUID)");
  }
}

std::pair<std::string, std::string> parse_aggregate(const std::string& text) {
  auto colon = text.find(':');
  if (colon == std::string::npos || colon == 0)
    throw usage_error("--aggregate: expected TYPE:ID (e.g. order:o-42), got \"" + text + "\"");
  return {text.substr(0, colon), text.substr(colon + 1)};
}

// ---- rendering ---------------------------------------------------------------------------

Json to_json(const pg::DeadLetter& d) {
  return {{"seq", d.seq},           {"id", d.id},
          {"aggregate_type", d.aggregate_type}, {"aggregate_id", d.aggregate_id},
          {"event_type", d.event_type}, {"attempts", d.attempts},
          {"dead_lettered_at", d.dead_lettered_at}, {"last_error", json_or_null(d.last_error)}};
}

void print_dead_letters(const std::vector<pg::DeadLetter>& rows, std::size_t error_width) {
  std::vector<std::vector<std::string>> table;
  for (const auto& d : rows)
    table.push_back({std::to_string(d.seq), d.id, cell(d.aggregate_type + ":" + d.aggregate_id, 40),
                     cell(d.event_type, 30), std::to_string(d.attempts), d.dead_lettered_at,
                     cell(d.last_error.value_or("-"), error_width)});
  print_table({"SEQ", "ID", "AGGREGATE", "EVENT TYPE", "ATTEMPTS", "DEAD-LETTERED AT", "LAST ERROR"}, table);
}

// ---- the subcommands ----------------------------------------------------------------------

int run_list(const Context& ctx, const std::string& aggregate, long long limit) {
  std::optional<std::pair<std::string, std::string>> agg;
  if (!aggregate.empty()) agg = parse_aggregate(aggregate);
  pg::PgAdmin admin(ctx.conninfo, ctx.config.database.schema, ctx.relay_app_name);
  auto page = admin.list_dead_letters(agg ? std::optional(agg->first) : std::nullopt,
                                      agg ? std::optional(agg->second) : std::nullopt, limit);
  if (ctx.json) {
    Json rows = Json::array();
    for (const auto& d : page.rows) rows.push_back(to_json(d));
    print_json(Json{{"total", page.total}, {"events", rows}});
    return 0;
  }
  if (page.rows.empty()) {
    std::cout << "no dead-lettered events" << (agg ? " for " + aggregate : "") << "\n";
    return 0;
  }
  print_dead_letters(page.rows, 60);
  std::cout << page.rows.size() << " of " << count_of(page.total, "dead-lettered event")
            << (static_cast<long long>(page.rows.size()) < page.total ? " (raise --limit to see more)" : "") << "\n";
  return 0;
}

int run_show(const Context& ctx, const std::string& ref) {
  pg::EventRefs refs;
  add_event_ref(ref, refs);
  auto found = pg::PgAdmin(ctx.conninfo, ctx.config.database.schema, ctx.relay_app_name).find_event(refs);
  if (!found) throw nothing_matched("no event with " + std::string(refs.seqs.empty() ? "id " : "seq ") + ref + " in " +
                                   ctx.config.database.schema + ".outbox_events");
  const auto& e = *found;
  const std::string state = e.dead_lettered_at ? "dead-lettered" : e.published_at ? "published" : "pending";
  const bool text = e.payload && printable_utf8(*e.payload);
  if (ctx.json) {
    auto headers = Json::parse(e.headers, nullptr, false);
    Json payload{{"size", e.payload ? e.payload->size() : 0},
                 {"encoding", !e.payload ? Json(nullptr) : Json(text ? "utf-8" : "base64")},
                 {"data", !e.payload ? Json(nullptr) : Json(text ? *e.payload : base64(*e.payload))}};
    Json j{{"seq", e.seq},
           {"id", e.id},
           {"state", state},
           {"aggregate_type", e.aggregate_type},
           {"aggregate_id", e.aggregate_id},
           {"event_type", e.event_type},
           {"topic", json_or_null(e.topic)},
           {"headers", headers.is_discarded() ? Json(e.headers) : headers},
           {"payload", payload},
           {"created_at", e.created_at},
           {"published_at", json_or_null(e.published_at)},
           {"attempts", e.attempts},
           {"next_attempt_at", json_or_null(e.next_attempt_at)},
           {"last_error", json_or_null(e.last_error)},
           {"dead_lettered_at", json_or_null(e.dead_lettered_at)},
           {"later_events_waiting", e.waiting_behind}};
    print_json(j);
    return 0;
  }
  std::string held;
  if (e.dead_lettered_at)
    held = " (" + std::to_string(e.waiting_behind) + " later events of its aggregate wait behind it)";
  std::cout << "seq               " << e.seq << "\n"
            << "id                " << e.id << "\n"
            << "state             " << state << held << "\n"
            << "aggregate         " << e.aggregate_type << ":" << e.aggregate_id << "\n"
            << "event type        " << e.event_type << "\n"
            << "topic             " << e.topic.value_or("- (from kafka.topic_template)") << "\n"
            << "created at        " << e.created_at << "\n"
            << "published at      " << or_dash(e.published_at) << "\n"
            << "attempts          " << e.attempts << "\n"
            << "next attempt at   " << or_dash(e.next_attempt_at) << "\n"
            << "dead-lettered at  " << or_dash(e.dead_lettered_at) << "\n"
            << "last error        " << or_dash(e.last_error) << "\n"
            << "headers           " << e.headers << "\n"
            << "payload           ";
  if (!e.payload)
    std::cout << "NULL (0 bytes)\n";
  else if (text)
    std::cout << e.payload->size() << " bytes, UTF-8 text:\n" << *e.payload << "\n";
  else
    std::cout << e.payload->size() << " bytes, binary (hex):\n" << hex_dump(*e.payload) << "\n";
  return 0;
}

// requeue and purge: named events (all or nothing) or --all.
int run_change(const Context& ctx, const std::vector<std::string>& events, bool all, bool purge, bool yes) {
  const std::string verb = purge ? "purge" : "requeue";
  if (all && !events.empty()) throw usage_error("give event seqs/ids or --all, not both");
  if (!all && events.empty()) throw usage_error("name the dead-lettered events to " + verb + " (seq or id), or --all");
  if (purge && all && !yes)
    throw usage_error("purge --all deletes every dead-lettered event for good; add --yes if that is what you want");
  pg::EventRefs refs;
  for (const auto& e : events) add_event_ref(e, refs);
  pg::PgAdmin admin(ctx.conninfo, ctx.config.database.schema, ctx.relay_app_name);
  auto out = purge ? admin.purge(refs, all) : admin.requeue(refs, all);
  if (!out.missing.empty()) {
    std::string msg = "nothing changed: these do not name a dead-lettered event:";
    for (const auto& m : out.missing) msg += "\n  " + m;
    throw nothing_matched(msg);
  }
  const std::string done = purge ? "purged" : "requeued";
  if (ctx.json) {
    Json rows = Json::array();
    for (const auto& d : out.rows) rows.push_back(to_json(d));
    print_json(Json{{done, out.rows.size()}, {"events", rows}});
    return 0;
  }
  if (out.rows.empty()) {
    std::cout << "no dead-lettered events to " << verb << "\n";
    return 0;
  }
  print_dead_letters(out.rows, 40);
  std::cout << done << " " << count_of(static_cast<long long>(out.rows.size()), "event") << "; "
            << (purge ? "they are gone, and the later events of their aggregates flow again"
                      : "the relay publishes each again before the later events of its aggregate")
            << " (relay woken)\n";
  return 0;
}

int run_replay(const Context& ctx, const std::string& from_seq,
               const std::string& to_seq, const std::string& aggregate, const std::string& since,
               const std::string& until, long long limit, bool dry_run) {
  std::vector<std::string> families;
  if (!from_seq.empty() || !to_seq.empty()) families.emplace_back("--from-seq/--to-seq");
  if (!aggregate.empty()) families.emplace_back("--aggregate");
  if (!since.empty() || !until.empty()) families.emplace_back("--since/--until");
  if (families.empty())
    throw usage_error("replay needs one selector: --from-seq A --to-seq B, --aggregate TYPE:ID, or --since TS [--until TS]");
  if (families.size() > 1)
    throw usage_error("replay takes one selector family, got " + families[0] + " and " + families[1]);
  pg::ReplaySelector sel;
  if (!from_seq.empty() || !to_seq.empty()) {
    if (from_seq.empty() || to_seq.empty()) throw usage_error("--from-seq and --to-seq go together (both inclusive)");
    sel.from_seq = parse_seq(from_seq, "--from-seq");
    sel.to_seq = parse_seq(to_seq, "--to-seq");
    if (*sel.from_seq > *sel.to_seq) throw usage_error("--from-seq " + from_seq + " is after --to-seq " + to_seq);
  }
  if (!aggregate.empty()) std::tie(sel.aggregate_type, sel.aggregate_id) = parse_aggregate(aggregate);
  if (!until.empty() && since.empty()) throw usage_error("--until needs --since");
  if (!since.empty()) sel.since = since;
  if (!until.empty()) sel.until = until;

  auto out = pg::PgAdmin(ctx.conninfo, ctx.config.database.schema, ctx.relay_app_name).replay(sel, limit, dry_run);
  if (out.over_limit)
    throw usage_error("more than " + std::to_string(limit) +
                     " published events match; nothing replayed. Narrow the selector or raise --limit (--limit 0: no limit)");
  const bool deletes = ctx.config.relay.mark_mode == config::MarkMode::remove;
  const std::string gone =
      "relay.mark_mode is delete: the relay deletes rows once published, so there is nothing left to replay "
      "(replay from Kafka instead)";
  if (deletes && out.matched == 0) throw nothing_matched(gone);
  if (ctx.json) {
    Json j{{"dry_run", dry_run},           {"matched", out.matched},
           {"replayed", out.replayed},     {"min_seq", json_or_null(out.min_seq)},
           {"max_seq", json_or_null(out.max_seq)}, {"aggregates", out.aggregates},
           {"held_back", out.held_back},   {"limit", limit},
           {"mark_mode", config::name_of(ctx.config.relay.mark_mode)}};
    print_json(j);
    return 0;
  }
  std::string range = out.matched ? " (seq " + std::to_string(*out.min_seq) + ".." + std::to_string(*out.max_seq) +
                                        ", " + count_of(out.aggregates, "aggregate") + ")"
                                  : "";
  if (dry_run)
    std::cout << "would replay " << count_of(out.matched, "published event") << range << "; nothing changed (--dry-run)\n";
  else
    std::cout << "replayed " << count_of(out.replayed, "published event") << range
              << (out.replayed ? "; the relay publishes them again in seq order (relay woken)" : "") << "\n";
  if (out.held_back > 0)
    std::cout << out.held_back << " of them wait behind a dead-lettered event of their aggregate "
              << "(see: outbox-relay dead-letters list)\n";
  if (deletes) std::cout << "note: " << gone << "; only rows left from before matched\n";
  if (out.matched == 0 && ctx.config.retention.published_hours > 0)
    std::cout << "note: retention deletes rows published more than " << ctx.config.retention.published_hours
              << " h ago (retention.published_hours); older events cannot be replayed from the outbox\n";
  return 0;
}

}  // namespace

AdminCommands::AdminCommands(CLI::App& cli, const std::function<void(CLI::App*)>& common) {
  const CLI::Validator count(
      [](const std::string& v) {
        return !v.empty() && v.size() <= 18 && std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); })
                   ? std::string()
                   : "expected a whole number, 0 or more, got \"" + v + "\"";
      },
      "N>=0");
  auto json = [&](CLI::App* sub) {
    common(sub);
    sub->add_flag("--json", flags_.json, "Print JSON for scripts");
  };
  status_ = cli.add_subcommand("status", "Backlog, lag, dead letters, throughput, the live instances and the lanes each holds");
  json(status_);

  dead_letters_ = cli.add_subcommand("dead-letters", "List, show, requeue or purge dead-lettered events");
  dead_letters_->require_subcommand(1);
  list_ = dead_letters_->add_subcommand("list", "Dead-lettered events in seq order");
  json(list_);
  list_->add_option("--limit", flags_.list_limit, "At most this many rows (0: all)")
      ->check(count)->capture_default_str();
  list_->add_option("--aggregate", flags_.aggregate, "Only this aggregate, as TYPE:ID");
  show_ = dead_letters_->add_subcommand("show", "Every column of one event, payload included");
  json(show_);
  show_->add_option("event", flags_.events, "seq or event id (UUID)")->required()->expected(1);
  requeue_ = dead_letters_->add_subcommand("requeue", "Send dead-lettered events again, in order (wakes the relay)");
  json(requeue_);
  requeue_->add_option("events", flags_.events, "seqs or event ids (UUIDs)");
  requeue_->add_flag("--all", flags_.all, "Every dead-lettered event");
  purge_ = dead_letters_->add_subcommand("purge", "Delete dead-lettered events; later events of their aggregates flow again");
  json(purge_);
  purge_->add_option("events", flags_.events, "seqs or event ids (UUIDs)");
  purge_->add_flag("--all", flags_.all, "Every dead-lettered event (needs --yes)");
  purge_->add_flag("--yes", flags_.yes, "Confirm --all");

  replay_ = cli.add_subcommand("replay", "Publish already-published events again (wakes the relay)");
  json(replay_);
  replay_->add_option("--from-seq", flags_.from_seq, "First seq (inclusive), with --to-seq");
  replay_->add_option("--to-seq", flags_.to_seq, "Last seq (inclusive), with --from-seq");
  replay_->add_option("--aggregate", flags_.aggregate, "Every published event of one aggregate, as TYPE:ID");
  replay_->add_option("--since", flags_.since, "Published at or after this time (parsed by PostgreSQL; no zone: UTC)");
  replay_->add_option("--until", flags_.until, "Published before this time, with --since");
  replay_->add_flag("--dry-run", flags_.dry_run, "Count what would be replayed; change nothing");
  replay_->add_option("--limit", flags_.replay_limit, "Refuse when more events match (0: no limit)")
      ->check(count)->capture_default_str();
}

bool AdminCommands::selected() const { return status_->parsed() || dead_letters_->parsed() || replay_->parsed(); }

int AdminCommands::run(const config::Config& config) const {
  std::string name = status_->parsed() ? "status" : replay_->parsed() ? "replay" : "dead-letters";
  for (auto* sub : {list_, show_, requeue_, purge_})
    if (sub->parsed()) name += " " + sub->get_name();
  auto fail = [&](std::string msg, int code) {
    while (!msg.empty() && std::isspace(static_cast<unsigned char>(msg.back()))) msg.pop_back();
    std::cerr << "outbox-relay " << name << ": " << pg::redact_conninfo(msg) << "\n";
    return code;
  };
  try {
    (void)pg::quoted_identifier(config.database.schema, "database.schema");
    // Its own session name, so the relay's sessions are told apart from this one.
    const auto db = connection_settings(config);
    Context ctx{config, db.conninfo("cli"), db.application_name(), flags_.json};

    if (status_->parsed()) return run_status(ctx);
    if (list_->parsed()) return run_list(ctx, flags_.aggregate, flags_.list_limit);
    if (show_->parsed()) return run_show(ctx, flags_.events.at(0));
    if (requeue_->parsed()) return run_change(ctx, flags_.events, flags_.all, false, false);
    if (purge_->parsed()) return run_change(ctx, flags_.events, flags_.all, true, flags_.yes);
    return run_replay(ctx, flags_.from_seq, flags_.to_seq, flags_.aggregate, flags_.since, flags_.until,
                      flags_.replay_limit, flags_.dry_run);
  } catch (const CommandError& e) {
    return fail(e.what(), e.exit_code());
  } catch (const pg::BadArgument& e) {
    return fail(e.what(), kExitUsage);
  } catch (const ConfigError& e) {
    return fail(e.what(), kExitConfig);
  } catch (const TransientError& e) {
    return fail(std::string("database unavailable: ") + e.what(), kExitFailure);
  } catch (const std::exception& e) {
    return fail(e.what(), kExitFailure);
  }
}

}  // namespace outbox::relay::cli
