// CPU time of the processes a benchmark runs beside it, read from /proc, so a benchmark can say
// what one event costs each of them and what the host's cores allow at that cost.
#pragma once

#include <dirent.h>
#include <sys/types.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace outbox::bench {

struct ProcStat {
  pid_t ppid = 0;
  double self = 0;      // utime + stime, seconds
  double children = 0;  // cutime + cstime: children that exited and were waited for
};

// Nothing (zeros) when the process is gone.
inline ProcStat proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  // The command name (field 2) may hold spaces: the fields that follow start after its ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream rest(line.substr(close + 2));
  std::string state;
  long long f[16] = {};
  rest >> state;
  for (auto& v : f) rest >> v;  // fields 4..19: ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  ProcStat s;
  s.ppid = static_cast<pid_t>(f[0]);
  s.self = static_cast<double>(f[10] + f[11]) / tick;
  s.children = static_cast<double>(f[12] + f[13]) / tick;
  return s;
}

// A process and everything it forked that still runs or was waited for (a PostgreSQL
// postmaster: its backends, live ones and those that ended).
inline double tree_cpu_seconds(pid_t root) {
  const auto top = proc_stat(root);
  double total = top.self + top.children;
  if (DIR* d = ::opendir("/proc")) {
    while (const dirent* e = ::readdir(d)) {
      const pid_t pid = static_cast<pid_t>(std::atol(e->d_name));
      if (pid <= 0 || pid == root) continue;
      if (const auto s = proc_stat(pid); s.ppid == root) total += s.self;
    }
    ::closedir(d);
  }
  return total;
}

// The postmaster of a data directory (first line of postmaster.pid), 0 when not running.
inline pid_t postmaster_pid(const std::string& data_dir) {
  std::ifstream in(data_dir + "/postmaster.pid");
  long pid = 0;
  in >> pid;
  return static_cast<pid_t>(pid);
}

}  // namespace outbox::bench
