#include "relay/app/instance_identity.hpp"

#include <cstdlib>
#include <fstream>

#include <unistd.h>

namespace outbox::relay::app {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// cgroup v2: "0::/system.slice/outbox-relay.service"; v1 lines end the same way.
std::string unit_from_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  std::string line, unit;
  while (std::getline(in, line)) {
    auto slash = line.rfind('/');
    auto name = slash == std::string::npos ? std::string() : line.substr(slash + 1);
    if (name.ends_with(".service")) unit = name;
  }
  return unit;
}

}  // namespace

Surroundings surroundings() {
  Surroundings s;
  s.pod_name = env("POD_NAME");
  s.in_kubernetes = !env("KUBERNETES_SERVICE_HOST").empty();
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) s.hostname = host;
  if (s.hostname.empty()) s.hostname = "unknown-host";
  if (!env("INVOCATION_ID").empty()) s.systemd_unit = unit_from_cgroup();
  return s;
}

std::vector<std::string> instance_id_candidates(const std::string& configured, const Surroundings& s) {
  if (!configured.empty()) return {configured};
  std::string base;
  if (!s.pod_name.empty()) base = s.pod_name;
  else if (s.in_kubernetes) base = s.hostname;
  else if (!s.systemd_unit.empty()) base = s.hostname + ":" + s.systemd_unit;
  else base = s.hostname;
  std::vector<std::string> out{base};
  for (int n = 2; n <= 8; ++n) out.push_back(base + "#" + std::to_string(n));
  return out;
}

}  // namespace outbox::relay::app
