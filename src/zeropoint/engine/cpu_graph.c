// A captured step's CPU kernels in one native call, with split kernels' parts run on a pool of threads.
//
// Why native: from Python, each kernel call costs a few microseconds of argument handling, and each split kernel
// a hand-off to helper threads through Python queues (about 75 us, two GIL round trips). A small model's step has
// hundreds of kernels. Here the caller passes the whole step as an array of jobs and the GIL is released for it.
//
// A job is a kernel's address, its arguments (64-bit words: buffer addresses, then symbolic values) and, for a
// kernel tinygrad split over threads (the THREAD opt), the slot of its core_id argument and its number of parts.
// Thread t of n runs parts t, t+n, t+2n, ...: each part writes its own slice of the output, so the result is the
// same as running the parts one after another.
//
// Built by engine/cpu_threads.py with the system's C compiler (the one tinygrad's CPU backend uses).
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define ZP_MAX_ARGS 64     // tinygrad's CPU programs take at most 63 arguments
#define ZP_MAX_THREADS 256
#define ZP_SPIN 20000      // pause loops (~0.2-0.5 ms) a helper waits for the next job before it sleeps

typedef uint64_t u64;
typedef struct { void *fxn; int64_t core_slot; int64_t parts; u64 *args; } zp_job;

// Every argument is a 64-bit integer word (a pointer or an int), which the x86-64 and AArch64 calling conventions
// pass identically whatever the count. The caller passes 64 and the kernel reads the ones it declares: extra
// register arguments are ignored and extra stack arguments are the caller's to clean up.
#define W8(o) a[o], a[o + 1], a[o + 2], a[o + 3], a[o + 4], a[o + 5], a[o + 6], a[o + 7]
#define T8 u64, u64, u64, u64, u64, u64, u64, u64
typedef void (*kernel_fn)(T8, T8, T8, T8, T8, T8, T8, T8);
static void call(void *fxn, const u64 *a) {
  ((kernel_fn)fxn)(W8(0), W8(8), W8(16), W8(24), W8(32), W8(40), W8(48), W8(56));
}

static void run_share(const zp_job *job, int t, int n) {
  u64 a[ZP_MAX_ARGS];
  memcpy(a, job->args, sizeof a);
  for (int64_t p = t; p < job->parts; p += n) {
    a[job->core_slot] = (u64)p;
    call(job->fxn, a);
  }
}

static struct {
  int n;                               // threads, the caller included
  unsigned start_gen;                  // gen when the helpers were started: each waits for the next one
  pthread_t tid[ZP_MAX_THREADS];
  const zp_job *_Atomic job;
  atomic_uint gen;                     // bumped once per dispatched job
  atomic_int pending;                  // helpers still running the current job
  atomic_int sleepers;
  atomic_int stop;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} P = {.n = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static inline void relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static void *helper(void *arg) {
  int t = (int)(intptr_t)arg;
  unsigned seen = P.start_gen;
  for (;;) {
    unsigned g;
    int spins = 0;
    while ((g = atomic_load(&P.gen)) == seen && !atomic_load(&P.stop)) {
      if (++spins < ZP_SPIN) { relax(); continue; }
      // sleep; the dispatcher bumps gen before it reads sleepers, we count ourselves before we read gen (both
      // sequentially consistent), so one of the two sees the other and no wake-up is lost
      pthread_mutex_lock(&P.mu);
      atomic_fetch_add(&P.sleepers, 1);
      while (atomic_load(&P.gen) == seen && !atomic_load(&P.stop)) pthread_cond_wait(&P.cv, &P.mu);
      atomic_fetch_sub(&P.sleepers, 1);
      pthread_mutex_unlock(&P.mu);
      spins = 0;
    }
    if (atomic_load(&P.stop)) return 0;
    seen = g;
    run_share(atomic_load(&P.job), t, P.n);
    atomic_fetch_sub(&P.pending, 1);
  }
}

static void wake_all(void) {
  if (atomic_load(&P.sleepers) > 0) {
    pthread_mutex_lock(&P.mu);
    pthread_cond_broadcast(&P.cv);
    pthread_mutex_unlock(&P.mu);
  }
}

static void stop_helpers(void) {
  if (P.n <= 1) return;
  atomic_store(&P.stop, 1);
  pthread_mutex_lock(&P.mu);
  pthread_cond_broadcast(&P.cv);
  pthread_mutex_unlock(&P.mu);
  for (int t = 1; t < P.n; t++) pthread_join(P.tid[t], 0);
  P.n = 1;
  atomic_store(&P.stop, 0);
}

// Run split kernels on n threads from now on (n - 1 helpers and the caller); returns the count in use.
int zp_pool_start(int n) {
  if (n < 1) n = 1;
  if (n > ZP_MAX_THREADS) n = ZP_MAX_THREADS;
  if (n == P.n) return n;
  stop_helpers();
  P.n = n;
  P.start_gen = atomic_load(&P.gen);
  for (int t = 1; t < n; t++) {
    if (pthread_create(&P.tid[t], 0, helper, (void *)(intptr_t)t) != 0) {  // keep the ones that started
      P.n = t;
      break;
    }
  }
  return P.n;
}

// In a forked child only the forking thread exists: forget the parent's helpers (they cannot be joined) and
// reset the locks they may have held.
void zp_after_fork(void) {
  P.n = 1;
  atomic_store(&P.sleepers, 0);
  atomic_store(&P.pending, 0);
  atomic_store(&P.stop, 0);
  pthread_mutex_init(&P.mu, 0);
  pthread_cond_init(&P.cv, 0);
}

static void dispatch(const zp_job *job) {
  int n = P.n;
  atomic_store(&P.job, job);
  atomic_store(&P.pending, n - 1);
  atomic_fetch_add(&P.gen, 1);
  wake_all();
  run_share(job, 0, n);
  for (int spins = 0; atomic_load(&P.pending) > 0; spins++) {
    if (spins < ZP_SPIN) relax();
    else sched_yield();              // a helper was descheduled: give it the core
  }
}

// Run jobs[0..njobs) in order, each one finished before the next starts. One caller at a time (the pool has one
// current job), as with tinygrad's runtime itself: jobs come from the process's one compute thread.
void zp_run(const zp_job *jobs, int64_t njobs) {
  for (int64_t i = 0; i < njobs; i++) {
    const zp_job *job = &jobs[i];
    if (job->core_slot < 0) call(job->fxn, job->args);
    else if (P.n > 1 && job->parts > 1) dispatch(job);
    else run_share(job, 0, 1);
  }
}
