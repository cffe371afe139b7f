// A small fork-join pool for the CPU executor: parallel_for splits [0, n) into one contiguous
// range per thread (the caller runs the first), and waits. Idle workers sleep on a condition
// variable rather than spin, so the CPU executor shares a busy machine gracefully (OpenMP's
// default spin-waiting made it 25x slower when other processes held the cores).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace awqd {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads <= 0: std::thread::hardware_concurrency()
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint ranges covering [0, n). Runs inline when n < min_per_thread * 2
  // or the pool has one thread. Not reentrant: fn must not call parallel_for on the same pool.
  // Calls from several threads (CPU engine replicas) take turns.
  void parallel_for(std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& fn,
                    std::int64_t min_per_thread = 1);

  // The process-wide pool of the CPU executor; its size comes from AWQD_CPU_THREADS if set.
  static ThreadPool& global();

 private:
  void worker(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::mutex call_mu_;  // held by the thread whose parallel_for is running
  std::condition_variable wake_, done_;
  const std::function<void(std::int64_t, std::int64_t)>* job_ = nullptr;
  std::int64_t n_ = 0;
  int parts_ = 0;
  std::uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace awqd
