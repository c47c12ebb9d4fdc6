// Which instance ids this process may claim: the configured one, or one derived from where it
// runs, stable across restarts of the same pod or systemd unit so a restarted process takes
// its own lanes back at once instead of waiting out its old lease.
#pragma once

#include <string>
#include <vector>

namespace outbox::relay::app {

// What the derivation reads, apart from the process so tests can drive it.
struct Surroundings {
  std::string pod_name;        // POD_NAME (the downward API in the shipped manifests)
  bool in_kubernetes = false;  // KUBERNETES_SERVICE_HOST is set
  std::string hostname;        // gethostname(); a pod's hostname is its name
  std::string systemd_unit;    // the unit of this process when systemd started it (INVOCATION_ID set)
};

[[nodiscard]] Surroundings surroundings();

// `configured` non-empty: just it. Otherwise the pod name in Kubernetes, else host:unit under
// systemd, else the host name; then the same with "#2" ... "#8" for other processes on the
// same host (the first free one is claimed).
[[nodiscard]] std::vector<std::string> instance_id_candidates(const std::string& configured, const Surroundings& s);

}  // namespace outbox::relay::app
