// Minimal thread helpers. Work is split into a fixed set of tasks that does not depend on
// the thread count, so every floating-point sum is taken in the same order on 1 or 64 threads.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "views.hpp"

namespace crve {

inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

/// Threads kept between calls: a parallel call costs a wake-up, not a thread start (about 0.1 ms
/// for two threads, plus the page faults of the new threads' stacks and thread-local buffers,
/// paid on every call before: 3 calls per streamed batch). One job at a time: a call made while
/// the pool is busy (another Python thread, or a call nested in a job) returns false and the
/// caller starts threads of its own, as every call did before.
class ThreadPool {
 public:
  static ThreadPool& instance() {
    static const bool made = [] {  // once per process
#if defined(__unix__) || defined(__APPLE__)
      // A forked child has none of the parent's threads: it starts from a new, empty pool (the
      // old one, whose mutexes may be held by threads that no longer exist, is abandoned).
      pthread_atfork(nullptr, nullptr, [] { current() = new ThreadPool; });
#endif
      current() = new ThreadPool;  // never destroyed: its threads wait until exit
      return true;
    }();
    (void)made;
    return *current();
  }

  /// Runs work() on `extra` pool threads and on the caller; work must not throw. False (nothing
  /// run) when the pool is busy.
  bool run(int extra, const std::function<void()>& work) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(m_);
      while (static_cast<int>(threads_.size()) < extra) threads_.emplace_back([this] { loop(); });
      job_ = &work;
      wanted_ = extra;
      taken_ = finished_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [&] { return finished_ == wanted_; });
    job_ = nullptr;
    return true;
  }

 private:
  static ThreadPool*& current() {
    static ThreadPool* p = nullptr;
    return p;
  }
  void loop() {
    std::uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen && taken_ < wanted_; });
      seen = generation_;
      ++taken_;
      const std::function<void()>* job = job_;
      lock.unlock();
      (*job)();
      lock.lock();
      if (++finished_ == wanted_) done_.notify_one();
    }
  }
  std::mutex busy_, m_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  const std::function<void()>* job_ = nullptr;
  std::uint64_t generation_ = 0;
  int wanted_ = 0, taken_ = 0, finished_ = 0;
};

/// Runs fn(state, task) for task in [0, n_tasks) on up to `threads` threads, at least `grain`
/// tasks per thread (cheap tasks are not worth a thread); each thread makes its own state with
/// make() (scratch buffers). Rethrows the first exception.
template <class Make, class Fn>
void parallel_workers(index_t n_tasks, int threads, Make&& make, Fn&& fn, index_t grain = 1) {
  threads = static_cast<int>(std::min<index_t>(resolve_threads(threads), std::max<index_t>(1, n_tasks / grain)));
  if (threads <= 1) {
    auto state = make();
    for (index_t t = 0; t < n_tasks; ++t) fn(state, t);
    return;
  }
  std::atomic<index_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    try {
      auto state = make();
      for (index_t t; (t = next.fetch_add(1)) < n_tasks;) fn(state, t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(n_tasks);
    }
  };
  if (!ThreadPool::instance().run(threads - 1, worker)) {
    std::vector<std::thread> own;
    own.reserve(threads - 1);
    for (int i = 1; i < threads; ++i) own.emplace_back(worker);
    worker();
    for (auto& th : own) th.join();
  }
  if (error) std::rethrow_exception(error);
}

/// parallel_workers without per-thread state: fn(task).
template <class Fn>
void parallel_tasks(index_t n_tasks, int threads, Fn&& fn, index_t grain = 1) {
  parallel_workers(n_tasks, threads, [] { return 0; }, [&](int, index_t t) { fn(t); }, grain);
}

/// Deterministic parallel reduction over [0, n): fixed chunks, partials combined in chunk order.
/// A thread is started per `grain` items at most.
template <class Acc, class Init, class Body, class Combine>
Acc parallel_reduce(index_t n, int threads, index_t n_chunks, index_t grain, Init&& init, Body&& body,
                    Combine&& combine) {
  n_chunks = std::max<index_t>(1, std::min(n_chunks, n));
  std::vector<Acc> partial;
  partial.reserve(n_chunks);
  for (index_t c = 0; c < n_chunks; ++c) partial.push_back(init());
  const int useful = static_cast<int>(std::max<index_t>(1, std::min<index_t>(resolve_threads(threads), n / grain)));
  parallel_tasks(n_chunks, useful, [&](index_t c) {
    index_t lo = n * c / n_chunks, hi = n * (c + 1) / n_chunks;
    for (index_t i = lo; i < hi; ++i) body(partial[c], i);
  });
  Acc total = std::move(partial[0]);
  for (index_t c = 1; c < n_chunks; ++c) combine(total, partial[c]);
  return total;
}

}  // namespace crve
