// The Kubernetes manifests and relay configs under deploy/, checked without a cluster: what the
// operator issue asks of every relay container, the budgets and Services around it, and the
// real binary accepting each config exactly as a pod would see it.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>

#include "deploy_files.hpp"

using namespace outbox::test::deploy;

namespace {

const std::string kConfigDir = "/etc/outbox-relay";
const std::string kConfigPath = kConfigDir + "/outbox-relay.yaml";
const std::set<std::string> kRelaySections{"database", "kafka", "message", "relay", "ownership", "inbox", "http", "log"};

// The inbox sidecar's container runs `inbox run`; the relay's `run`.
bool is_inbox(const YAML::Node& c) {
  const auto args = at(c, {"args"});
  return args.IsSequence() && args.size() > 0 && args[0].as<std::string>("") == "inbox";
}
// ConfigMaps the README tells operators to create out of band.
const std::set<std::string> kExternalConfigMaps{"outbox-relay-db-ca"};

bool is_relay_config(const YamlFile& f) {
  if (f.documents.size() != 1 || !f.documents[0].IsMap() || f.path.filename() == "kustomization.yaml") return false;
  for (const auto& kv : f.documents[0])
    if (!kRelaySections.contains(kv.first.as<std::string>())) return false;
  return true;
}

struct Workload {
  Object object;
  Kustomization* kustomization;
};

// Every object of every kustomization, once, with the kustomization whose directory holds it.
std::vector<Kustomization> all_kustomizations() {
  std::vector<Kustomization> ks;
  for (const auto& d : kustomization_dirs()) ks.push_back(load_kustomization(d));
  return ks;
}

std::vector<Workload> relay_workloads(std::vector<Kustomization>& ks) {
  std::vector<Workload> out;
  for (auto& k : ks)
    for (const auto& o : k.objects)
      if (o.file.parent_path() == k.dir && (o.kind() == "Deployment" || o.kind() == "Job") &&
          relay_container(pod_spec(o.node)))
        out.push_back({o, &k});
  return out;
}

// The env a container sees: literal values, and a stand-in for each value from a Secret.
std::map<std::string, std::string> container_env(const YAML::Node& c) {
  std::map<std::string, std::string> env;
  for (const auto& e : at(c, {"env"})) {
    const auto name = at(e, {"name"}).as<std::string>("");
    env[name] = at(e, {"value"}) ? at(e, {"value"}).as<std::string>() : "stand-in-for-" + name;
  }
  return env;
}

// The local file a pod would see at kConfigPath, through its generated ConfigMap.
std::optional<fs::path> mounted_config(const YAML::Node& pod, const YAML::Node& c, const Kustomization& k) {
  for (const auto& m : at(c, {"volumeMounts"})) {
    if (at(m, {"mountPath"}).as<std::string>("") != kConfigDir) continue;
    for (const auto& v : at(pod, {"volumes"})) {
      if (at(v, {"name"}).as<std::string>("") != at(m, {"name"}).as<std::string>("") || !at(v, {"configMap"})) continue;
      auto it = k.config_maps.find(at(v, {"configMap", "name"}).as<std::string>(""));
      if (it == k.config_maps.end()) return std::nullopt;
      for (const auto& f : it->second)
        if (f.filename() == "outbox-relay.yaml") return f;
    }
  }
  return std::nullopt;
}

void check_http_probe(Findings& f, const std::string& where, const YAML::Node& c, const char* probe,
                      const std::string& path) {
  const auto get = at(c, {probe, "httpGet"});
  f.expect(at(get, {"path"}).as<std::string>("") == path && resolve_port(c, at(get, {"port"})) == 9464,
           where + ": " + probe + " must be httpGet " + path + " on port 9464");
}

// Security settings, the container's own or else the pod's (as Kubernetes applies them).
void check_security(Findings& f, const std::string& where, const YAML::Node& pod, const YAML::Node& c) {
  const auto cs = at(c, {"securityContext"}), ps = at(pod, {"securityContext"});
  auto get = [&](const char* key) { return at(cs, {key}) ? at(cs, {key}) : at(ps, {key}); };
  f.expect(get("runAsNonRoot").as<bool>(false), where + ": runAsNonRoot: true");
  f.expect(get("runAsUser").as<int>(0) == 10001, where + ": runAsUser: 10001 (the image's user)");
  f.expect(at(cs, {"readOnlyRootFilesystem"}).as<bool>(false), where + ": readOnlyRootFilesystem: true");
  f.expect(at(cs, {"allowPrivilegeEscalation"}) && !at(cs, {"allowPrivilegeEscalation"}).as<bool>(),
           where + ": allowPrivilegeEscalation: false");
  bool drops_all = false;
  for (const auto& cap : at(cs, {"capabilities", "drop"})) drops_all = drops_all || cap.as<std::string>() == "ALL";
  f.expect(drops_all, where + ": capabilities.drop must contain ALL");
  f.expect(at(get("seccompProfile"), {"type"}).as<std::string>("") == "RuntimeDefault",
           where + ": seccompProfile.type: RuntimeDefault");
  f.expect(at(pod, {"enableServiceLinks"}) && !at(pod, {"enableServiceLinks"}).as<bool>(),
           where + ": enableServiceLinks: false (a Service named outbox-relay* would inject OUTBOX_RELAY_* "
                   "variables, which the relay rejects with exit 78)");
}

void check_secrets(Findings& f, const std::string& where, const YAML::Node& c) {
  bool pgpassword = false;
  for (const auto& e : at(c, {"env"})) {
    const auto name = at(e, {"name"}).as<std::string>("");
    const auto ref = at(e, {"valueFrom", "secretKeyRef"});
    const auto value = at(e, {"value"});
    if (name.find("PASSWORD") != std::string::npos && !name.ends_with("_FILE"))  // a path is no secret
      f.expect(ref && !value, where + ": " + name + " must come from a Secret, not a literal value");
    if (name == "PGPASSWORD") pgpassword = at(ref, {"key"}).as<std::string>("") == "database-password";
    if (name == "OUTBOX_RELAY_KAFKA_PROPERTY_SASL_PASSWORD")
      f.expect(at(ref, {"key"}).as<std::string>("") == "kafka-sasl-password" && at(ref, {"optional"}).as<bool>(false),
               where + ": the SASL password comes from the optional Secret key kafka-sasl-password");
    if (name == "OUTBOX_RELAY_DATABASE_URL") {
      const auto url = value.as<std::string>("");
      const auto at = url.find('@'), scheme = url.find("://");
      f.expect(value && url.find("password") == std::string::npos &&
                   (at == std::string::npos || url.substr(scheme + 3, at - scheme - 3).find(':') == std::string::npos),
               where + ": OUTBOX_RELAY_DATABASE_URL is a literal value without a password");
    }
  }
  f.expect(pgpassword, where + ": PGPASSWORD from secretKeyRef key database-password");
}

}  // namespace

TEST_CASE("every YAML file under deploy/ parses, and every kustomization's resources and generated files exist",
          "[deploy]") {
  std::vector<YamlFile> files;
  REQUIRE_NOTHROW(files = all_yaml_files());
  REQUIRE(files.size() >= 10);
  Findings f;
  for (auto& k : all_kustomizations()) {
    for (const auto& m : k.missing) f.expect(false, "missing: " + m);
    // A YAML file beside a kustomization that it does not list would silently not be deployed.
    std::set<fs::path> used{k.dir / "kustomization.yaml"};
    for (const auto& o : k.objects) used.insert(o.file);
    for (const auto& [name, paths] : k.config_maps) used.insert(paths.begin(), paths.end());
    for (const auto& file : files)
      if (file.path.parent_path() == k.dir)
        f.expect(used.contains(file.path), file.path.string() + ": not listed by its kustomization.yaml");
  }
  INFO(f.text());
  CHECK(f.lines.empty());
}

TEST_CASE("the top-level kustomization renders both shapes with distinct names", "[deploy]") {
  auto top = load_kustomization(deploy_dir() / "kubernetes");
  REQUIRE(top.missing.empty());
  std::set<std::string> deployments, seen;
  Findings f;
  for (const auto& o : top.objects) {
    f.expect(seen.insert(o.kind() + "/" + o.name()).second, "two objects named " + o.label());
    if (o.kind() == "Deployment") deployments.insert(o.name());
  }
  for (const auto& name : top.generator_names) f.expect(seen.insert("ConfigMap/" + name).second, "two ConfigMaps " + name);
  CHECK(deployments == std::set<std::string>{"outbox-relay", "orders", "payments"});
  INFO(f.text());
  CHECK(f.lines.empty());
}

TEST_CASE("every relay container is probed, bounded, hardened, configured from its ConfigMap and given its "
          "passwords from a Secret",
          "[deploy]") {
  auto ks = all_kustomizations();
  auto workloads = relay_workloads(ks);
  REQUIRE(workloads.size() >= 3);  // standalone, sidecar, migrate Job
  Findings f;
  for (const auto& w : workloads) {
    const auto pod = pod_spec(w.object.node);
    const auto c = *relay_container(pod);
    const auto where = w.object.label() + " container " + at(c, {"name"}).as<std::string>("");
    check_security(f, where, pod, c);
    check_secrets(f, where, c);
    for (const char* kind : {"requests", "limits"}) {
      const auto r = at(c, {"resources", kind});
      f.expect(at(r, {"cpu"}) && at(r, {"memory"}), where + ": resources." + kind + " must set cpu and memory");
    }
    const auto req_cpu = at(c, {"resources", "requests", "cpu"}), lim_cpu = at(c, {"resources", "limits", "cpu"});
    const auto req_mem = at(c, {"resources", "requests", "memory"}), lim_mem = at(c, {"resources", "limits", "memory"});
    if (req_cpu && lim_cpu && req_mem && lim_mem)
      f.expect(cpu_cores(req_cpu.as<std::string>()) <= cpu_cores(lim_cpu.as<std::string>()) &&
                   memory_bytes(req_mem.as<std::string>()) <= memory_bytes(lim_mem.as<std::string>()),
               where + ": requests must not exceed limits");
    for (const auto& v : at(pod, {"volumes"}))
      if (at(v, {"configMap"})) {
        const auto name = at(v, {"configMap", "name"}).as<std::string>("");
        f.expect(w.kustomization->config_maps.contains(name) || kExternalConfigMaps.contains(name),
                 where + ": ConfigMap " + name + " is neither generated by its kustomization nor documented");
      }
    if (w.object.kind() == "Job") continue;  // `migrate` runs once: no server, no probes, no config file

    const auto env = container_env(c);
    const auto args = at(c, {"args"});
    if (is_inbox(c))
      f.expect(args.size() == 2 && args[1].as<std::string>("") == "run", where + ": an inbox sidecar's args are [inbox, run]");
    else
      f.expect(args.IsSequence() && args.size() > 0 && args[0].as<std::string>("") == "run", where + ": args must start with run");
    f.expect(env.contains("OUTBOX_RELAY_CONFIG") && env.at("OUTBOX_RELAY_CONFIG") == kConfigPath,
             where + ": OUTBOX_RELAY_CONFIG=" + kConfigPath);
    f.expect(env.contains("OUTBOX_RELAY_HTTP_LISTEN") && env.at("OUTBOX_RELAY_HTTP_LISTEN") == "0.0.0.0:9464",
             where + ": OUTBOX_RELAY_HTTP_LISTEN=0.0.0.0:9464");
    f.expect(mounted_config(pod, c, *w.kustomization).has_value(),
             where + ": a generated ConfigMap with outbox-relay.yaml must be mounted at " + kConfigDir);
    check_http_probe(f, where, c, "livenessProbe", "/healthz");
    if (at(c, {"startupProbe"})) check_http_probe(f, where, c, "startupProbe", "/healthz");
    if (at(pod, {"containers"}).size() > 1) {
      // A pod is Ready only when all its containers are: a relay waiting out an outage must not
      // take the service out of its Service.
      f.expect(!at(c, {"readinessProbe"}), where + ": a sidecar relay must have no readinessProbe (a broker outage "
                                             "would take the service's pods out of their Service)");
    } else {
      check_http_probe(f, where, c, "readinessProbe", "/readyz");
      if (at(w.object.node, {"spec", "replicas"}).as<int>(1) > 1)
        f.expect(at(w.object.node, {"spec", "strategy", "type"}).as<std::string>("RollingUpdate") == "RollingUpdate" &&
                     at(w.object.node, {"spec", "strategy", "rollingUpdate", "maxUnavailable"}).as<int>(-1) == 0,
                 where + ": RollingUpdate with maxUnavailable 0 (a new pod joins and takes its share before an "
                         "old one stops, so one relay always runs)");
    }
  }
  INFO(f.text());
  CHECK(f.lines.empty());
}

TEST_CASE("every relay pod's environment and mounted config pass check-config, and its grace period outlasts "
          "the shutdown timeout",
          "[deploy]") {
  auto ks = all_kustomizations();
  int checked = 0;
  for (const auto& w : relay_workloads(ks)) {
    if (w.object.kind() != "Deployment") continue;
    const auto pod = pod_spec(w.object.node);
    const auto c = *relay_container(pod);
    auto env = container_env(c);
    const auto config = mounted_config(pod, c, *w.kustomization);
    REQUIRE(config);
    env["OUTBOX_RELAY_CONFIG"] = config->string();
    INFO(w.object.label() << " with " << config->string());
    const bool inbox = is_inbox(c);
    const auto r = inbox ? run_relay({"inbox", "check-config", "--json"}, env) : run_relay({"check-config", "--json"}, env);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    const auto effective = YAML::Load(r.output);
    CHECK(effective["http.listen"].as<std::string>() == "0.0.0.0:9464");
    const std::string key = inbox ? "inbox.shutdown_timeout_ms" : "relay.shutdown_timeout_ms";
    const auto shutdown_ms = std::stol(effective[key].as<std::string>());
    const auto grace_s = at(pod, {"terminationGracePeriodSeconds"}).as<long>(30);
    INFO("terminationGracePeriodSeconds " << grace_s << ", " << key << " " << shutdown_ms);
    CHECK(grace_s * 1000 > shutdown_ms);
    ++checked;
  }
  CHECK(checked == 3);  // the standalone relay, the relay sidecar, the inbox sidecar
}

TEST_CASE("every relay config file under deploy/ is accepted by outbox-relay check-config", "[deploy]") {
  const auto dir = fs::temp_directory_path() / ("outbox-deploy-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "password") << "stand-in\n";
  int checked = 0;
  for (const auto& file : all_yaml_files()) {
    if (!is_relay_config(file)) continue;
    // check-config does not connect; a URL and a readable password file are all it needs.
    std::map<std::string, std::string> env{{"OUTBOX_RELAY_DATABASE_PASSWORD_FILE", (dir / "password").string()}};
    if (!at(file.documents[0], {"database", "url"})) env["OUTBOX_RELAY_DATABASE_URL"] = "postgresql://outbox_relay@db:5432/app";
    // A config with an inbox section is the inbox sidecar's: checked as `inbox run` would.
    const bool inbox = static_cast<bool>(at(file.documents[0], {"inbox"}));
    const auto r = inbox ? run_relay({"inbox", "check-config", "--config", file.path.string()}, env)
                         : run_relay({"check-config", "--config", file.path.string()}, env);
    INFO(file.path.string() << "\n" << r.output);
    CHECK(r.exit_code == 0);
    ++checked;
  }
  CHECK(checked >= 5);  // deploy/config (relay and inbox) and the three Kubernetes shapes

  // The check has teeth: a misspelt key is a configuration error (exit 78).
  std::ofstream(dir / "bad.yaml") << "relay:\n  batch_sise: 10\n";
  const auto bad = run_relay({"check-config", "--config", (dir / "bad.yaml").string()},
                             {{"OUTBOX_RELAY_KAFKA_BROKERS", "kafka:9092"}});
  CHECK(bad.exit_code == 78);
  fs::remove_all(dir);
}

TEST_CASE("every Deployment has exactly one PodDisruptionBudget and a metrics Service that lists not-ready pods",
          "[deploy]") {
  std::vector<Object> deployments, budgets, services;
  for (const auto& file : all_yaml_files())
    for (const auto& doc : file.documents) {
      Object o{doc, file.path};
      if (!doc.IsMap()) continue;
      if (o.kind() == "Deployment") deployments.push_back(o);
      if (o.kind() == "PodDisruptionBudget") budgets.push_back(o);
      if (o.kind() == "Service") services.push_back(o);
    }
  REQUIRE(deployments.size() >= 2);
  Findings f;
  for (const auto& d : deployments) {
    const auto labels = pod_labels(d.node);
    int matching = 0;
    for (const auto& b : budgets)
      if (selects(at(b.node, {"spec", "selector"}), labels)) {
        ++matching;
        f.expect(at(b.node, {"spec", "maxUnavailable"}) || at(b.node, {"spec", "minAvailable"}),
                 b.label() + ": needs maxUnavailable or minAvailable");
      }
    f.expect(matching == 1, d.label() + ": " + std::to_string(matching) + " PodDisruptionBudgets select its pods");
    if (!relay_container(pod_spec(d.node))) continue;
    bool scraped = false;
    for (const auto& s : services) {
      YAML::Node selector;
      selector["matchLabels"] = at(s.node, {"spec", "selector"});
      if (!selects(selector, labels)) continue;
      for (const auto& p : at(s.node, {"spec", "ports"}))
        if (at(p, {"name"}).as<std::string>("") == "metrics" && at(p, {"port"}).as<int>(0) == 9464 &&
            resolve_port(*relay_container(pod_spec(d.node)), at(p, {"targetPort"})) == 9464) {
          scraped = true;
          f.expect(at(s.node, {"spec", "publishNotReadyAddresses"}).as<bool>(false),
                   s.label() + ": publishNotReadyAddresses: true (a relay in an outage is not Ready and must be scraped most of all)");
        }
    }
    f.expect(scraped, d.label() + ": no Service with port `metrics` 9464 selects its pods");
  }
  INFO(f.text());
  CHECK(f.lines.empty());
}
