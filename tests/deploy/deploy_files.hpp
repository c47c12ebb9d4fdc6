// Reads the deployment artefacts under deploy/ the way kustomize and the relay would: every
// YAML document, each kustomization's resources and generated ConfigMaps, the relay container
// of a workload; and runs the real binary on a config with a given environment.
#pragma once

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace outbox::test::deploy {

namespace fs = std::filesystem;

// deploy/ of the source tree, and the built outbox-relay (compile definitions).
fs::path deploy_dir();
std::string relay_binary();

// Every *.yaml / *.yml file under deploy/, sorted, each with all its documents.
struct YamlFile {
  fs::path path;
  std::vector<YAML::Node> documents;
};
std::vector<YamlFile> all_yaml_files();

// node[k1][k2]... through const lookups: an Undefined node where a key is missing (yaml-cpp
// throws when indexing the result of a missing key, and a non-const lookup inserts one).
YAML::Node at(const YAML::Node& node, std::initializer_list<std::string> path);

// Problems found by a check, reported together (one line each, with the file and object).
struct Findings {
  std::vector<std::string> lines;
  void expect(bool ok, const std::string& what) {
    if (!ok) lines.push_back(what);
  }
  std::string text() const;
};

// A Kubernetes object and the file it came from.
struct Object {
  YAML::Node node;
  fs::path file;
  std::string kind() const { return at(node, {"kind"}).as<std::string>(""); }
  std::string name() const { return at(node, {"metadata", "name"}).as<std::string>(""); }
  std::string label() const { return kind() + "/" + name() + " (" + file.filename().string() + ")"; }
};

// One kustomization.yaml with what it renders: objects of its resource files, generated
// ConfigMaps (name -> files), and the same of the kustomization directories it lists.
struct Kustomization {
  fs::path dir;
  YAML::Node doc;
  std::vector<Object> objects;                         // recursive
  std::map<std::string, std::vector<fs::path>> config_maps;  // this kustomization's own generators
  std::vector<std::string> generator_names;            // recursive, for collision checks
  std::vector<std::string> missing;                    // resources or generator files not found
};
Kustomization load_kustomization(const fs::path& dir);
std::vector<fs::path> kustomization_dirs();

// The pod template of a workload (Deployment, Job), or an empty node.
YAML::Node pod_spec(const YAML::Node& workload);
YAML::Node pod_labels(const YAML::Node& workload);
// The container running the outbox-relay image (any registry, any tag), if any.
std::optional<YAML::Node> relay_container(const YAML::Node& pod);
// A container port given as a number or by name; 0 when unknown.
int resolve_port(const YAML::Node& container, const YAML::Node& port);
// Whether a matchLabels selector selects these labels (matchExpressions: never).
bool selects(const YAML::Node& selector, const YAML::Node& labels);

// Kubernetes quantities: "50m" CPU -> 0.05, "64Mi" -> 67108864.
double cpu_cores(const std::string& quantity);
double memory_bytes(const std::string& quantity);

// Runs the relay binary with exactly this environment (plus PATH); exit code and output.
struct RunResult {
  int exit_code;
  std::string output;
};
RunResult run_relay(const std::vector<std::string>& args, const std::map<std::string, std::string>& env);

}  // namespace outbox::test::deploy
