//! Worker threads that serve one listening socket, nginx's model: each thread runs a
//! single-thread tokio runtime of its own and accepts from its own `dup` of the shared socket
//! (no `SO_REUSEPORT`, so a second process on the same port still fails to bind). A
//! connection, its requests and the replica connections they open ([`crate::use_own_pool`])
//! then stay on one thread, and a proxied request wakes no other thread.
//!
//! Used by the gateway's public listeners and by the server's listener.

use std::future::Future;
use std::net::TcpListener;

use tokio::sync::watch;

/// What the workers are asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Keep serving.
    No,
    /// Stop accepting; let the connections finish what they are doing (the caller's serve
    /// function decides what that means), then end.
    Graceful,
    /// End now: the runtime is dropped with whatever it was running.
    Now,
}

/// The stop signal a serve function watches.
pub type StopSignal = watch::Receiver<Stop>;

/// Resolves once `stop` asks for at least `level`, or once the [`Workers`] are gone.
pub async fn stopped(stop: &mut StopSignal, level: Stop) {
    let _ = stop.wait_for(|s| *s >= level).await;
}

/// Running worker threads. Dropping them stops them at once ([`Stop::Now`]) and joins them;
/// [`Workers::shut_down`] lets the connections finish first.
pub struct Workers {
    stop: watch::Sender<Stop>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers::new()
    }
}

impl Workers {
    pub fn new() -> Workers {
        Workers { stop: watch::Sender::new(Stop::No), threads: Vec::new() }
    }

    /// How many workers `configured` means: itself, or one per CPU for 0.
    pub fn count(configured: usize) -> usize {
        match configured {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
    }

    /// Starts `count` threads named `{name}-{i}` (Linux keeps 15 bytes of a name), each
    /// running `serve(listener, stop)` on a runtime of its own with its own replica pool shard,
    /// until `serve` returns or [`Stop::Now`]. Shards are numbered from the threads already
    /// started, so that listeners started on the same `Workers` keep separate pools too.
    pub fn start<F, Fut>(
        &mut self,
        listener: &TcpListener,
        count: usize,
        name: &str,
        serve: F,
    ) -> std::io::Result<()>
    where
        F: Fn(tokio::net::TcpListener, StopSignal) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()>,
    {
        listener.set_nonblocking(true)?;
        for i in 0..count {
            let listener = listener.try_clone()?;
            let (serve, mut stop) = (serve.clone(), self.stop.subscribe());
            let shard = self.threads.len() + 1;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let thread = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                crate::use_own_pool(shard);
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!(error = %e, "a worker cannot listen");
                            return;
                        }
                    };
                    let signal = stop.clone();
                    tokio::select! {
                        () = serve(listener, signal) => {}
                        () = stopped(&mut stop, Stop::Now) => {}
                    }
                });
            })?;
            self.threads.push(thread);
        }
        Ok(())
    }

    /// Asks the workers to stop gracefully and waits, without blocking the runtime, until
    /// every thread has ended.
    pub async fn shut_down(mut self) {
        self.stop.send_replace(Stop::Graceful);
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.send_replace(Stop::Now);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
