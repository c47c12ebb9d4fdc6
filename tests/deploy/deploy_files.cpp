#include "deploy_files.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace outbox::test::deploy {

fs::path deploy_dir() { return fs::path(OUTBOX_SOURCE_DIR) / "deploy"; }
std::string relay_binary() { return OUTBOX_RELAY_BINARY; }

YAML::Node at(const YAML::Node& node, std::initializer_list<std::string> path) {
  YAML::Node cur;
  cur.reset(node);  // never `cur = x`: assigning to a yaml-cpp Node rewrites the node it refers to
  for (const auto& key : path) {
    if (!cur.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& lookup = cur;
    const YAML::Node next = lookup[key];
    if (!next.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
    cur.reset(next);
  }
  return cur;
}

std::string Findings::text() const {
  std::string out;
  for (const auto& l : lines) out += "  " + l + "\n";
  return out;
}

std::vector<YamlFile> all_yaml_files() {
  std::vector<YamlFile> files;
  for (const auto& entry : fs::recursive_directory_iterator(deploy_dir())) {
    const auto ext = entry.path().extension();
    if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml"))
      files.push_back({entry.path(), YAML::LoadAllFromFile(entry.path().string())});
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  return files;
}

std::vector<fs::path> kustomization_dirs() {
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::recursive_directory_iterator(deploy_dir()))
    if (entry.is_regular_file() && entry.path().filename() == "kustomization.yaml")
      dirs.push_back(entry.path().parent_path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

Kustomization load_kustomization(const fs::path& dir) {
  Kustomization k{dir, YAML::LoadFile((dir / "kustomization.yaml").string()), {}, {}, {}, {}};
  const YAML::Node& doc = k.doc;
  for (const auto& r : doc["resources"]) {
    const fs::path p = dir / r.as<std::string>();
    if (fs::is_directory(p) && fs::exists(p / "kustomization.yaml")) {
      auto child = load_kustomization(p);
      k.objects.insert(k.objects.end(), child.objects.begin(), child.objects.end());
      k.generator_names.insert(k.generator_names.end(), child.generator_names.begin(), child.generator_names.end());
      k.missing.insert(k.missing.end(), child.missing.begin(), child.missing.end());
    } else if (fs::is_regular_file(p)) {
      for (const auto& doc : YAML::LoadAllFromFile(p.string()))
        if (doc.IsMap()) k.objects.push_back({doc, p});
    } else {
      k.missing.push_back(p.string() + " (resource of " + (dir / "kustomization.yaml").string() + ")");
    }
  }
  for (const auto& gen : doc["configMapGenerator"]) {
    const auto name = at(gen, {"name"}).as<std::string>("");
    k.generator_names.push_back(name);
    for (const auto& f : gen["files"]) {
      std::string spec = f.as<std::string>();
      if (auto eq = spec.find('='); eq != std::string::npos) spec = spec.substr(eq + 1);  // key=path
      const fs::path p = dir / spec;
      if (fs::is_regular_file(p))
        k.config_maps[name].push_back(p);
      else
        k.missing.push_back(p.string() + " (configMapGenerator " + name + ")");
    }
  }
  return k;
}

YAML::Node pod_spec(const YAML::Node& workload) { return at(workload, {"spec", "template", "spec"}); }

YAML::Node pod_labels(const YAML::Node& workload) { return at(workload, {"spec", "template", "metadata", "labels"}); }

std::optional<YAML::Node> relay_container(const YAML::Node& pod) {
  for (const auto& c : pod["containers"]) {
    std::string image = at(c, {"image"}).as<std::string>("");
    if (auto at = image.find('@'); at != std::string::npos) image.resize(at);
    if (auto slash = image.rfind('/'); slash != std::string::npos) image = image.substr(slash + 1);
    if (auto colon = image.find(':'); colon != std::string::npos) image.resize(colon);
    if (image == "outbox-relay") return c;
  }
  return std::nullopt;
}

int resolve_port(const YAML::Node& container, const YAML::Node& port) {
  if (!port) return 0;
  const auto text = port.as<std::string>();
  if (!text.empty() && std::all_of(text.begin(), text.end(), ::isdigit)) return std::stoi(text);
  for (const auto& p : at(container, {"ports"}))
    if (at(p, {"name"}).as<std::string>("") == text) return at(p, {"containerPort"}).as<int>(0);
  return 0;
}

bool selects(const YAML::Node& selector, const YAML::Node& labels) {
  const auto match = at(selector, {"matchLabels"});
  if (at(selector, {"matchExpressions"}) || !match.IsMap() || match.size() == 0) return false;
  for (const auto& kv : match) {
    const auto value = at(labels, {kv.first.as<std::string>()});
    if (!value || value.as<std::string>() != kv.second.as<std::string>()) return false;
  }
  return true;
}

double cpu_cores(const std::string& q) {
  if (q.empty()) return NAN;
  if (q.back() == 'm') return std::stod(q.substr(0, q.size() - 1)) / 1000.0;
  return std::stod(q);
}

double memory_bytes(const std::string& q) {
  static const std::vector<std::pair<std::string, double>> units{
      {"Ki", 1024.0}, {"Mi", 1024.0 * 1024}, {"Gi", 1024.0 * 1024 * 1024}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}};
  for (const auto& [suffix, factor] : units)
    if (q.size() > suffix.size() && q.ends_with(suffix)) return std::stod(q.substr(0, q.size() - suffix.size())) * factor;
  return q.empty() ? NAN : std::stod(q);
}

RunResult run_relay(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) {
  const std::string binary = relay_binary();
  std::vector<std::string> envs{"PATH=/usr/bin:/bin"};
  for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> argv{const_cast<char*>(binary.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& s : envs) envp.push_back(s.data());
  envp.push_back(nullptr);

  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    throw std::runtime_error("cannot start " + binary);
  }
  std::string output;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) output.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

}  // namespace outbox::test::deploy
