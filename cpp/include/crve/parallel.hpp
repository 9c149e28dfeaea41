// Minimal thread helpers. Work is split into a fixed set of tasks that does not depend on
// the thread count, so every floating-point sum is taken in the same order on 1 or 64 threads.
#pragma once
#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "views.hpp"

namespace crve {

inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

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
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
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
