//! A real etcd server for tests: the Debian `etcd-server` binary, started on
//! free loopback ports in a temporary directory and killed on drop. Plus
//! fault injection: pausing etcd (SIGSTOP) and a TCP proxy that can cut
//! and hold a client's connections.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// etcd processes started per [`EtcdServer::start`] call before giving up
/// when each exits during startup (typically: a picked port was taken).
const START_ATTEMPTS: u32 = 3;
/// How long one started etcd may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness probes: etcd signals readiness by nothing we can
/// wait on, so it is polled.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// Connect / read / write timeout of one readiness probe request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A running etcd. Dropping it kills the process and removes its data.
pub struct EtcdServer {
    child: Child,
    client_url: String,
    client_port: u16,
    /// etcd member name, unique per started process.
    name: String,
    _dir: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdLaunchError {
    #[error("etcd binary not found ({0}); install the Debian package `etcd-server` (run .ci/run or `apt-get install etcd-server`)")]
    NotInstalled(String),
    #[error("could not start etcd: {0}")]
    Io(#[from] std::io::Error),
    #[error("etcd did not become ready within {0:?}; see its log at {1}")]
    NotReady(Duration, PathBuf),
    #[error("etcd exited during startup {attempts} times (on fresh ports each time; last: {status}); see its log at {log}")]
    Exited {
        attempts: u32,
        status: ExitStatus,
        log: PathBuf,
    },
}

/// Ports tests listen on are taken below Linux's ephemeral range (32768 and
/// up by default), where outgoing connections get theirs: a port found
/// free there was sometimes taken by an outgoing connection before the
/// service bound it (seen: an orchestrator's "Address already in use"
/// while routers opened connections).
const LISTEN_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 for a test's server to listen on: bound,
/// then released, and never handed out twice by this process. Another
/// process can still race for it, which is rare enough for tests (and
/// etcd's start retries on it).
pub fn free_port() -> std::io::Result<u16> {
    use std::collections::HashSet;
    static GIVEN: std::sync::Mutex<Option<HashSet<u16>>> = std::sync::Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let span = u32::from(LISTEN_PORTS.end - LISTEN_PORTS.start);
    // Spread start points over processes and calls; 7919 is prime, so the
    // walk visits every port of the range once.
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    );
    for i in 0..span {
        let port = LISTEN_PORTS.start + (seed.wrapping_add(i.wrapping_mul(7_919)) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port in {LISTEN_PORTS:?}"),
    ))
}

fn etcd_binary() -> Result<PathBuf, EtcdLaunchError> {
    if let Ok(path) = std::env::var("CUTOVER_ETCD_BIN") {
        return Ok(PathBuf::from(path));
    }
    for candidate in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    Err(EtcdLaunchError::NotInstalled(
        "looked in /usr/bin, /usr/local/bin and $CUTOVER_ETCD_BIN".into(),
    ))
}

/// A member name no other etcd on this machine uses, so readiness can tell
/// our etcd from whatever else answers on a port we picked.
fn unique_member_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "cutover-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// How one started etcd process ended its startup.
enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

/// Polls until the etcd started as `child` as member `name` serves on
/// `client_port`, it exits, or `deadline` passes.
fn wait_ready(child: &mut Child, client_port: u16, name: &str, deadline: Instant) -> Startup {
    loop {
        // An error from `try_wait` leaves the status unknown; the probes
        // and the deadline still decide.
        if let Ok(Some(status)) = child.try_wait() {
            return Startup::Exited(status);
        }
        if serves_as(client_port, name) {
            return Startup::Ready;
        }
        if Instant::now() >= deadline {
            return Startup::TimedOut;
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

/// True when the server on `port` is etcd member `name` and healthy: its
/// `GET /health` says `"health":"true"` and its member list names `name`.
/// A bare TCP connect is not enough: after we release a picked port,
/// another process (often another test's etcd, which is healthy too) can
/// take it while our etcd fails to bind and exits.
fn serves_as(port: u16, name: &str) -> bool {
    let healthy = matches!(
        http_request(port, "GET", "/health", ""),
        Some((200, body)) if body.contains("\"health\":\"true\"")
    );
    healthy
        && matches!(
            http_request(port, "POST", "/v3/cluster/member/list", "{}"),
            Some((200, body)) if body.contains(&format!("\"name\":\"{name}\""))
        )
}

/// One HTTP/1.0 request to `127.0.0.1:port` (the server closes the
/// connection after the response). `(status, body)`, or `None` on any
/// failure.
fn http_request(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// After a failed start: when the log is inside the temp dir, keeps that
/// dir (without etcd's data) so the log named in the error can be read.
fn keep_log(dir: tempfile::TempDir, log_in_dir: bool) {
    if !log_in_dir {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir.path()) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let _ = dir.keep();
}

impl EtcdServer {
    /// Starts etcd and waits until it serves: the process is alive, its
    /// `GET /health` says `"health":"true"` and it is the member this call
    /// started (not another server that took the port). If etcd exits
    /// during startup (e.g. a picked port was taken in the meantime), it is
    /// started again on fresh ports, up to 3 times in all.
    ///
    /// Its log goes to `log_dir/etcd.log` when given, else into its temp
    /// dir; every attempt is appended, after a `=== cutover:` line. Errors
    /// name the log; without `log_dir`, a failed start keeps the temp dir
    /// (minus etcd's data) so the log can be read.
    pub fn start(log_dir: Option<&Path>) -> Result<Self, EtcdLaunchError> {
        Self::start_with_ports(log_dir, || Ok((free_port()?, free_port()?)))
    }

    /// [`EtcdServer::start`] with `pick` choosing each attempt's
    /// `(client_port, peer_port)`.
    fn start_with_ports(
        log_dir: Option<&Path>,
        mut pick: impl FnMut() -> std::io::Result<(u16, u16)>,
    ) -> Result<Self, EtcdLaunchError> {
        let bin = etcd_binary()?;
        let dir = tempfile::tempdir()?;
        let log_in_dir = log_dir.is_none();
        let log_path = match log_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                d.join("etcd.log")
            }
            None => dir.path().join("etcd.log"),
        };
        let mut log = File::create(&log_path)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (client_port, peer_port) = pick()?;
            let name = unique_member_name();
            let client_url = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let data_dir = dir.path().join(format!("data-{attempt}"));
            writeln!(
                log,
                "=== cutover: etcd start attempt {attempt}/{START_ATTEMPTS}: member {name}, client {client_url}, peer {peer_url}"
            )?;
            let mut child = Command::new(&bin)
                .arg(format!("--name={name}"))
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={name}={peer_url}"))
                .arg("--unsafe-no-fsync")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log.try_clone()?)
                .spawn()?;
            let deadline = Instant::now() + READY_TIMEOUT;
            match wait_ready(&mut child, client_port, &name, deadline) {
                Startup::Ready => {
                    return Ok(EtcdServer {
                        child,
                        client_url,
                        client_port,
                        name,
                        _dir: dir,
                    })
                }
                Startup::Exited(status) => {
                    eprintln!(
                        "etcd attempt {attempt}/{START_ATTEMPTS} on {client_url} exited during startup ({status}); log: {}",
                        log_path.display()
                    );
                    if attempt >= START_ATTEMPTS {
                        keep_log(dir, log_in_dir);
                        return Err(EtcdLaunchError::Exited {
                            attempts: attempt,
                            status,
                            log: log_path,
                        });
                    }
                    let _ = std::fs::remove_dir_all(&data_dir);
                }
                Startup::TimedOut => {
                    kill_and_reap(&mut child);
                    keep_log(dir, log_in_dir);
                    return Err(EtcdLaunchError::NotReady(READY_TIMEOUT, log_path));
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// The etcd member name, unique per started process.
    pub fn member_name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:PORT` of the client port.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes etcd (SIGSTOP): connections stay open but nothing answers,
    /// like a hung server or a silent network partition.
    pub fn pause(&self) -> std::io::Result<()> {
        self.signal("-STOP")
    }

    /// Undoes [`EtcdServer::pause`] (SIGCONT).
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal("-CONT")
    }

    /// Kills etcd (SIGKILL) and waits for it: connections are refused from
    /// then on.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    // `kill(1)` rather than libc, so the crate needs no unsafe code.
    fn signal(&self, sig: &str) -> std::io::Result<()> {
        let status = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill {sig} {} failed: {status}",
                self.child.id()
            )))
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy in front of a server, for simulating partitions:
/// [`TcpProxy::cut`] drops every connection and holds new ones (accepted
/// but silent) until [`TcpProxy::restore`]. Stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    held: Arc<tokio::sync::watch::Sender<bool>>,
    generation: Arc<Mutex<tokio_util::sync::CancellationToken>>,
    stop: tokio_util::sync::CancellationToken,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`. Must be
    /// called inside a tokio runtime; the proxy task lives until drop.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (held, _) = tokio::sync::watch::channel(false);
        let held = Arc::new(held);
        let generation = Arc::new(Mutex::new(tokio_util::sync::CancellationToken::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task_held = held.clone();
        let task_generation = generation.clone();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            // Connection tasks belong to this set and die with it.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = task_stop.cancelled() => return,
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                    a = listener.accept() => a,
                };
                let Ok((inbound, _)) = accepted else { continue };
                let token = task_generation
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let mut held_rx = task_held.subscribe();
                conns.spawn(async move {
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = token.cancelled() => return,
                        r = held_rx.wait_for(|h| !*h) => if r.is_err() { return },
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Ok(TcpProxy {
            addr,
            held,
            generation,
            stop,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every proxied connection and holds new ones until `restore`.
    pub fn cut(&self) {
        // Hold first, then end the generation: a connection that picked up
        // the old generation is dropped, one that gets the new one waits.
        self.held.send_replace(true);
        let old = std::mem::take(
            &mut *self
                .generation
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        old.cancel();
    }

    /// Lets held and new connections through again.
    pub fn restore(&self) {
        self.held.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port held by a listener that accepts connections (a bare
    /// TCP connect succeeds) but never answers, and that etcd cannot bind.
    fn taken_port() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
        let port = listener.local_addr().expect("local addr").port();
        (listener, port)
    }

    #[test]
    fn retries_on_fresh_ports_when_the_client_port_is_taken() {
        let (_taken, taken) = taken_port();
        let logs = tempfile::tempdir().expect("log dir");
        let mut picks = 0;
        let etcd = EtcdServer::start_with_ports(Some(logs.path()), || {
            picks += 1;
            let client = if picks == 1 { taken } else { free_port()? };
            Ok((client, free_port()?))
        })
        .unwrap_or_else(|e| panic!("etcd starts on the second attempt: {e}"));
        assert_eq!(picks, 2, "one retry after the taken port");
        let port = etcd.client_addr().port();
        assert_ne!(port, taken);
        assert_eq!(etcd.endpoint(), format!("http://127.0.0.1:{port}"));
        let (status, body) = http_request(port, "GET", "/health", "").expect("health answers");
        assert_eq!(status, 200);
        assert!(body.contains("\"health\":\"true\""), "{body}");
        // Readiness insists on our member: a healthy etcd that is not the
        // one we started does not count.
        assert!(serves_as(port, etcd.member_name()));
        assert!(!serves_as(port, "cutover-test-someone-else"));
        assert!(!serves_as(taken, etcd.member_name()));
        let log = std::fs::read_to_string(logs.path().join("etcd.log")).expect("etcd.log");
        assert!(log.contains("attempt 1/3"), "{log}");
        assert!(log.contains("attempt 2/3"), "{log}");
        assert!(log.contains(&format!("127.0.0.1:{taken}")), "{log}");
    }

    #[test]
    fn gives_up_after_three_exits_and_names_the_kept_log() {
        let (_taken, taken) = taken_port();
        let mut picks = 0;
        let result = EtcdServer::start_with_ports(None, || {
            picks += 1;
            Ok((taken, free_port()?))
        });
        let err = match result {
            Ok(etcd) => panic!("etcd started on a taken port: {}", etcd.endpoint()),
            Err(e) => e,
        };
        assert_eq!(picks, 3);
        let EtcdLaunchError::Exited {
            attempts,
            status,
            ref log,
        } = err
        else {
            panic!("expected Exited, got {err}");
        };
        assert_eq!(attempts, 3);
        assert!(!status.success(), "{status}");
        let message = err.to_string();
        assert!(message.contains(&log.display().to_string()), "{message}");
        // Without a log dir the temp dir is kept for the log, minus data.
        let text = std::fs::read_to_string(log).expect("the named log exists");
        assert_eq!(text.matches("=== cutover: etcd start attempt").count(), 3);
        let kept = log.parent().expect("log has a parent dir").to_owned();
        let leftovers: Vec<_> = std::fs::read_dir(&kept)
            .expect("kept dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("etcd.log")]);
        std::fs::remove_dir_all(&kept).expect("clean up the kept dir");
    }
}
