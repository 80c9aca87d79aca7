// Persistent worker pool behind shardkit::parallel_run (see parallel.h).
#include "shardkit/parallel.h"

#include <pthread.h>

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace shardkit {
namespace {

thread_local bool t_inside_pool = false;

class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  void run(int num_threads, const std::function<void(int, int)>& fn) {
    // One job at a time: concurrent callers (two Python threads) queue here.
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    grow(num_threads - 1);
    std::exception_ptr first_error;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      job_threads_ = num_threads;
      pending_ = num_threads - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    t_inside_pool = true;
    try {
      fn(0, num_threads);
    } catch (...) {
      first_error = std::current_exception();
    }
    t_inside_pool = false;
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
    if (!first_error) first_error = error_;
    lock.unlock();
    if (first_error) std::rethrow_exception(first_error);
  }

 private:
  void grow(int wanted) {
    while (static_cast<int>(workers_.size()) < wanted) {
      int index = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, index] { loop(index); });
    }
  }

  void loop(int index) {
    t_inside_pool = true;
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int, int)>* job;
      int threads;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        job = job_;
        threads = job_threads_;
      }
      if (index >= threads) continue;  // this job needs fewer workers
      std::exception_ptr error;
      try {
        (*job)(index, threads);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (error && !error_) error_ = error;
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  int job_threads_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

ThreadPool* g_pool = nullptr;
std::once_flag g_pool_once;

void reset_pool_in_child() {
  // A forked child has none of the parent's worker threads: start afresh.
  // The parent's pool object is leaked in the child, never touched again.
  g_pool = new ThreadPool();
}

ThreadPool& pool() {
  // Leaked on purpose: joining threads from a static destructor at
  // interpreter exit can deadlock, and the OS reclaims them anyway.
  std::call_once(g_pool_once, [] {
    g_pool = new ThreadPool();
    pthread_atfork(nullptr, nullptr, reset_pool_in_child);
  });
  return *g_pool;
}

}  // namespace

void parallel_run(int num_threads, const std::function<void(int, int)>& fn) {
  if (num_threads <= 1 || t_inside_pool) {
    // Nested calls run serially instead of deadlocking on the pool.
    fn(0, 1);
    return;
  }
  pool().run(num_threads, fn);
}

}  // namespace shardkit
