//! A loopback TCP front of one broker that can go dark: until
//! [`Blackhole::go_dark`] it forwards every connection to the broker (so a
//! link through it can be created and its mirrors added, which checks that
//! the cluster answers); from then on it drops the forwarded connections
//! and accepts new ones but never answers them, like a cluster behind a
//! firewall that drops packets. Stops when dropped.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};

#[derive(Default)]
struct Shared {
    dark: AtomicBool,
    stop: AtomicBool,
    /// Accepted while dark: kept open, never read or answered.
    held: Mutex<Vec<TcpStream>>,
    /// Both ends of every forwarded connection, shut down when going dark.
    forwarded: Mutex<Vec<TcpStream>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn shut_forwarded(&self) {
        for s in lock(&self.forwarded).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

pub struct Blackhole {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Blackhole {
    /// Listens on a free loopback port in front of `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Result<Blackhole> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the black hole")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_owned();
        let task_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name("blackhole".into())
            .spawn(move || accept_loop(listener, &upstream, &task_shared))
            .context("spawning the black hole thread")?;
        Ok(Blackhole {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// `127.0.0.1:PORT`, to use as a bootstrap server.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Drops every forwarded connection; from now on connections are
    /// accepted and never answered.
    pub fn go_dark(&self) {
        self.shared.dark.store(true, Ordering::SeqCst);
        self.shared.shut_forwarded();
    }

    /// Connections accepted since going dark (all still open).
    pub fn held(&self) -> usize {
        lock(&self.shared.held).len()
    }
}

fn accept_loop(listener: TcpListener, upstream: &str, shared: &Shared) {
    for inbound in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(inbound) = inbound else { continue };
        if shared.dark.load(Ordering::SeqCst) {
            lock(&shared.held).push(inbound);
            continue;
        }
        if let Err(e) = forward(inbound, upstream, shared) {
            eprintln!("blackhole: cannot forward to {upstream}: {e}");
        }
    }
}

fn forward(inbound: TcpStream, upstream: &str, shared: &Shared) -> io::Result<()> {
    let outbound = TcpStream::connect(upstream)?;
    {
        let mut all = lock(&shared.forwarded);
        all.push(inbound.try_clone()?);
        all.push(outbound.try_clone()?);
    }
    for (mut from, mut to) in [
        (inbound.try_clone()?, outbound.try_clone()?),
        (outbound, inbound),
    ] {
        // Ends when either side closes or the black hole shuts both.
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
    Ok(())
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.shared.shut_forwarded();
        for s in lock(&self.shared.held).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
