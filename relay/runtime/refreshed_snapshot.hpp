// A value read from a slow outside world (the database) on a thread of its own, every
// `every`, so that readers on the event loop take the latest copy and never wait for it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

namespace outbox::relay::runtime {

template <class T>
class RefreshedSnapshot {
 public:
  struct Copy {
    std::optional<T> value;       // nullopt: never read successfully
    std::optional<double> age_s;  // since the read that produced `value`
    bool last_read_ok = false;    // the most recent attempt succeeded
  };

  // `read` throws when the value cannot be read; the previous copy is kept (and ages). The
  // thread is let go at destruction rather than joined: a read stuck on a hung database must
  // not hold up the shutdown; it finishes (or the process ends) on its own.
  RefreshedSnapshot(std::function<T()> read, std::chrono::milliseconds every)
      : state_(std::make_shared<State>(std::move(read), every)) {
    std::thread([state = state_] { state->run(); }).detach();
  }
  ~RefreshedSnapshot() {
    {
      std::lock_guard lock(state_->mutex);
      state_->stop = true;
    }
    state_->cv.notify_all();
  }
  RefreshedSnapshot(const RefreshedSnapshot&) = delete;
  RefreshedSnapshot& operator=(const RefreshedSnapshot&) = delete;

  [[nodiscard]] Copy latest() const {
    std::lock_guard lock(state_->mutex);
    Copy c{state_->value, std::nullopt, state_->last_ok};
    if (state_->value) c.age_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - state_->read_at).count();
    return c;
  }

 private:
  struct State {
    State(std::function<T()> r, std::chrono::milliseconds e) : read(std::move(r)), every(e) {}
    void run() {
      std::unique_lock lock(mutex);
      while (!stop) {
        lock.unlock();
        std::optional<T> fresh;
        try {
          fresh = read();
        } catch (const std::exception&) {
          // Kept: the age tells how stale the copy is.
        }
        lock.lock();
        last_ok = fresh.has_value();
        if (fresh) {
          value = std::move(fresh);
          read_at = std::chrono::steady_clock::now();
        }
        cv.wait_for(lock, every, [this] { return stop; });
      }
    }
    std::function<T()> read;
    std::chrono::milliseconds every;
    std::mutex mutex;
    std::condition_variable cv;
    bool stop = false;
    bool last_ok = false;
    std::optional<T> value;
    std::chrono::steady_clock::time_point read_at{};
  };
  std::shared_ptr<State> state_;
};

}  // namespace outbox::relay::runtime
