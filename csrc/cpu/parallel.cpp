// shardkit::parallel_run (see parallel.h): the process's OpenMP runtime when
// there is one, else a persistent worker pool of our own.
#include "shardkit/parallel.h"

#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

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

// The GOMP ABI entry points of an OpenMP runtime already in the process
// (libgomp, and LLVM's libomp, which exports the same names).
struct OpenMp {
  void (*parallel)(void (*)(void*), void*, unsigned, unsigned) = nullptr;
  int (*thread_num)() = nullptr;
  int (*num_threads)() = nullptr;
};

const OpenMp& openmp() {
  static const OpenMp api = [] {
    OpenMp found;
    const char* forced = std::getenv("SHARDKIT_THREAD_POOL");
    if (forced && std::strcmp(forced, "own") == 0) return found;
    found.parallel = reinterpret_cast<decltype(found.parallel)>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
    found.thread_num = reinterpret_cast<decltype(found.thread_num)>(dlsym(RTLD_DEFAULT, "omp_get_thread_num"));
    found.num_threads = reinterpret_cast<decltype(found.num_threads)>(dlsym(RTLD_DEFAULT, "omp_get_num_threads"));
    if (!found.parallel || !found.thread_num || !found.num_threads) found = OpenMp{};
    return found;
  }();
  return api;
}

struct OpenMpJob {
  const std::function<void(int, int)>* fn;
  int calls;
  std::exception_ptr error;
  std::mutex error_mutex;
};

void openmp_body(void* data) {
  auto* job = static_cast<OpenMpJob*>(data);
  const OpenMp& omp = openmp();
  // The team may be smaller than asked for: every index still runs once.
  const int team = omp.num_threads();
  for (int index = omp.thread_num(); index < job->calls; index += team) {
    try {
      (*job->fn)(index, job->calls);
    } catch (...) {
      std::lock_guard<std::mutex> lock(job->error_mutex);
      if (!job->error) job->error = std::current_exception();
    }
  }
}

}  // namespace

void parallel_run(int num_threads, const std::function<void(int, int)>& fn) {
  if (num_threads <= 1 || t_inside_pool) {
    // Nested calls run serially instead of deadlocking on the pool.
    for (int index = 0; index < std::max(num_threads, 1); ++index) fn(index, std::max(num_threads, 1));
    return;
  }
  const OpenMp& omp = openmp();
  if (omp.parallel) {
    OpenMpJob job;
    job.fn = &fn;
    job.calls = num_threads;
    omp.parallel(openmp_body, &job, static_cast<unsigned>(num_threads), 0);
    if (job.error) std::rethrow_exception(job.error);
    return;
  }
  pool().run(num_threads, fn);
}

void parallel_run_own_pool(int num_threads, const std::function<void(int, int)>& fn) {
  if (num_threads <= 1 || t_inside_pool) {
    for (int index = 0; index < std::max(num_threads, 1); ++index) fn(index, std::max(num_threads, 1));
    return;
  }
  pool().run(num_threads, fn);
}

const char* thread_pool_kind() { return openmp().parallel ? "openmp" : "own"; }

}  // namespace shardkit
