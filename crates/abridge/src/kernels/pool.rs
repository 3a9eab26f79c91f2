//! The threads our kernels split their work over: one pool per model, as
//! many threads as the model was given (the caller's thread counts as one).
//!
//! candle's own pool, which the kernels used before, is one per process and
//! sized once from `RAYON_NUM_THREADS` or the core count: a program that
//! asked a model for one thread still had every core spinning in its
//! kernels, and the `abridge` binary had to set an environment variable for
//! `--threads` to hold. Here the model installs its pool around its work
//! ([`Pool::install`]) and the kernels ask for the current one ([`run`]).
//!
//! Workers spin for a while after each job before they sleep: a forward
//! pass calls the kernels hundreds of times with microseconds between
//! calls, less than waking a sleeping thread takes.

use std::any::Any;
use std::cell::Cell;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

/// Spins a worker waits for the next job before it sleeps: 0.4 to 1.2 ms,
/// as a CPU's pause instruction takes 20 to 140 cycles. candle's pool, which
/// the kernels used before, waited 25,000.
const SPINS: u32 = 20_000;

/// Grabs of work per thread in [`Pool::chunked`]: enough that a fast
/// thread takes over a slow one's share, few enough that the shared cursor
/// stays cold.
const GRABS_PER_THREAD: usize = 8;

/// A job as the workers see it: the caller's closure, with its lifetime
/// erased (the caller waits for every worker before the closure goes).
type Job = *const (dyn Fn() + Sync);

struct Shared {
    /// Bumped once per job; a worker runs a job when it sees a new value.
    generation: AtomicUsize,
    /// Workers done with the current job.
    done: AtomicUsize,
    job: Mutex<Option<SendJob>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    stop: AtomicBool,
}

impl Shared {
    fn new() -> Self {
        Self {
            generation: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            job: Mutex::new(None),
            panic: Mutex::new(None),
            stop: AtomicBool::new(false),
        }
    }
}

struct SendJob(Job);
// SAFETY: the closure is `Sync`, and it outlives every use (see `Job`).
unsafe impl Send for SendJob {}

/// A fixed set of worker threads that run one job at a time.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time, whoever calls.
    calling: Mutex<()>,
}

thread_local! {
    /// The pool `install` put in place on this thread.
    static CURRENT: Cell<Option<*const Pool>> = const { Cell::new(None) };
    /// Set on a pool's workers, and on a caller while it runs its share:
    /// a kernel started from inside a job runs whole, on its own thread.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

impl Pool {
    /// A pool of `threads` in all: the caller and `threads - 1` workers.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new());
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let theirs = Arc::clone(&shared);
            let worker = std::thread::Builder::new()
                .name(format!("abridge-kernel-{i}"))
                .spawn(move || work(&theirs));
            match worker {
                Ok(w) => workers.push(w),
                Err(e) => {
                    stop(&shared, &workers);
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self {
            shared,
            workers,
            calling: Mutex::new(()),
        })
    }

    /// Threads a job runs on, the caller's included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f` with this pool as the one [`run`] uses on this thread.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<*const Pool>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(Some(self as *const Pool))));
        f()
    }

    /// Runs `f` once on every thread of the pool and returns when all are
    /// done; a panic in any of them is raised here.
    fn broadcast(&self, f: &(dyn Fn() + Sync)) {
        if self.workers.is_empty() || IN_JOB.with(Cell::get) {
            return f();
        }
        let _one_at_a_time = self.calling.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        // SAFETY: only the lifetime is erased; `Wait` below keeps `f` alive
        // until every worker has finished with it, even if `f` panics here.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Job>(f) };
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(SendJob(job));
        shared.done.store(0, Ordering::Relaxed);
        shared.generation.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        struct Wait<'a>(&'a Shared, usize);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                let mut spins = 0u32;
                while self.0.done.load(Ordering::Acquire) < self.1 {
                    if spins < SPINS {
                        spins += 1;
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                *self.0.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        let wait = Wait(shared, self.workers.len());
        IN_JOB.with(|c| c.set(true));
        let mine = std::panic::catch_unwind(AssertUnwindSafe(f));
        IN_JOB.with(|c| c.set(false));
        drop(wait);
        let theirs = shared
            .panic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if let Some(p) = theirs {
            std::panic::resume_unwind(p);
        }
    }

    /// Calls `f` on ranges that cover `0..n` once, from every thread of the
    /// pool, each thread taking the next range as it finishes one.
    pub fn chunked(&self, n: usize, f: impl Fn(Range<usize>) + Sync) {
        if n == 0 {
            return;
        }
        if self.workers.is_empty() || IN_JOB.with(Cell::get) {
            return f(0..n);
        }
        let chunk = n.div_ceil(self.threads() * GRABS_PER_THREAD).max(1);
        let cursor = AtomicUsize::new(0);
        self.broadcast(&|| {
            loop {
                let start = cursor.fetch_add(chunk, Ordering::Relaxed);
                if start >= n {
                    break;
                }
                f(start..n.min(start + chunk));
            }
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        stop(&self.shared, &self.workers);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn stop(shared: &Shared, workers: &[JoinHandle<()>]) {
    shared.stop.store(true, Ordering::Release);
    for w in workers {
        w.thread().unpark();
    }
}

/// A worker: waits for each new generation, runs its job, reports done.
fn work(shared: &Shared) {
    IN_JOB.with(|c| c.set(true));
    // Not the value now: the first job may already have been posted
    // before this thread started.
    let mut seen = 0;
    loop {
        let mut spins = 0u32;
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let now = shared.generation.load(Ordering::Acquire);
            if now != seen {
                seen = now;
                break;
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                // Woken by the next job's unpark, which is never lost: one
                // given before this park makes it return at once.
                std::thread::park();
            }
        }
        let job = shared
            .job
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|j| j.0);
        if let Some(job) = job {
            // SAFETY: the caller keeps the job alive until `done` counts
            // this worker (see `Pool::broadcast`).
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*job)() }));
            if let Err(p) = result {
                shared
                    .panic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(p);
            }
        }
        shared.done.fetch_add(1, Ordering::Release);
    }
}

/// Calls `f` over `0..n` in ranges on the pool installed on this thread
/// (see [`Pool::chunked`]); where none is (a kernel called outside a model,
/// as the benches do), on a pool of one thread per core.
pub fn run(n: usize, f: impl Fn(Range<usize>) + Sync) {
    match CURRENT.with(Cell::get) {
        // SAFETY: `install` keeps the pool borrowed while it is current.
        Some(pool) => unsafe { (*pool).chunked(n, f) },
        None => fallback().chunked(n, f),
    }
}

fn fallback() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // Without threads to spare, the caller's alone: a pool of one
        // starts no thread, so it cannot fail.
        Pool::new(cores)
            .or_else(|_| Pool::new(1))
            .expect("a pool of one thread starts none")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once_on_as_many_threads_as_asked() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            let seen: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
            let ids = Mutex::new(std::collections::HashSet::new());
            pool.install(|| {
                run(seen.len(), |range| {
                    ids.lock().unwrap().insert(std::thread::current().id());
                    for i in range {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    }
                })
            });
            assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
            assert!(ids.lock().unwrap().len() <= threads);
        }
    }

    #[test]
    fn a_panic_in_a_job_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(2).unwrap();
        let hit = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pool.chunked(64, |range| assert!(!range.contains(&40), "index 40"))
        }));
        assert!(hit.is_err());
        let count = AtomicUsize::new(0);
        pool.chunked(64, |range| {
            count.fetch_add(range.len(), Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn nested_runs_stay_on_their_thread() {
        let pool = Pool::new(2).unwrap();
        let count = AtomicUsize::new(0);
        pool.install(|| {
            run(4, |outer| {
                for _ in outer {
                    run(10, |inner| {
                        count.fetch_add(inner.len(), Ordering::Relaxed);
                    });
                }
            })
        });
        assert_eq!(count.load(Ordering::Relaxed), 40);
    }
}
