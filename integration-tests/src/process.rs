//! Our services as real processes, plus small helpers (ports, log dirs,
//! HTTP readiness).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

/// How long `kill9` and `Drop` wait for a SIGKILLed process to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A free TCP port on 127.0.0.1 for a test's service to listen on (see
/// `cutover_coord::testing::free_port`: below the ephemeral range, never
/// handed out twice by this process).
pub fn free_port() -> Result<u16> {
    cutover_coord::testing::free_port().context("finding a free port")
}

/// The directory holding the running executable's profile outputs
/// (`target/<profile>`), also when the executable is a test in
/// `target/<profile>/deps`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("executable {} has no parent dir", exe.display()))?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// `target/test-logs/<test_name>/`, emptied first. Logs stay after the test
/// so a failure can be read afterwards.
pub fn test_log_dir(test_name: &str) -> Result<PathBuf> {
    let profile = profile_dir()?;
    let target = profile
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent dir", profile.display()))?;
    let dir = target.join("test-logs").join(test_name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("clearing {}", dir.display())),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Path of one of our binaries: `$CUTOVER_BIN_DIR/<bin>` when that is set,
/// else next to the running executable (`target/<profile>/<bin>`).
pub fn bin_path(bin: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("CUTOVER_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => profile_dir()?,
    };
    let path = dir.join(bin);
    if !path.is_file() {
        bail!(
            "service binary `{bin}` not found at {}; run `cargo build --bins` (or `just test`) first",
            path.display()
        );
    }
    Ok(path)
}

#[derive(Default)]
struct ExitState {
    status: Mutex<Option<ExitStatus>>,
    exited: Condvar,
}

impl ExitState {
    fn lock(&self) -> MutexGuard<'_, Option<ExitStatus>> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A child process with its stdout and stderr in `<log_dir>/<name>.log`.
/// Dropping it SIGKILLs the process if it still runs.
///
/// A waiter thread blocks in `waitid` and records the exit status, so
/// [`ServiceProcess::wait_exit`] wakes on the exit itself. Signals are sent
/// only while the process is known not to be reaped (its pid cannot have
/// been reused).
pub struct ServiceProcess {
    name: String,
    pid: Pid,
    log_path: PathBuf,
    state: Arc<ExitState>,
    waiter: Option<JoinHandle<()>>,
    /// Write end of a tethered process's stdin (see
    /// [`ServiceProcess::spawn_tethered`]); closed on drop.
    tether: Option<std::process::ChildStdin>,
}

impl ServiceProcess {
    /// Runs our binary `bin` (see [`bin_path`]) with `args`.
    pub fn spawn(name: &str, bin: &str, args: &[String], log_dir: &Path) -> Result<ServiceProcess> {
        Self::spawn_path(name, &bin_path(bin)?, args, log_dir)
    }

    /// Runs the executable at `path` with `args`.
    pub fn spawn_path(
        name: &str,
        path: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<ServiceProcess> {
        let mut cmd = Command::new(path);
        cmd.args(args);
        Self::spawn_command(name, cmd, log_dir)
    }

    /// Runs a prepared command (for environment variables, working dir...).
    /// stdin is closed; stdout and stderr go to `<log_dir>/<name>.log`.
    pub fn spawn_command(name: &str, cmd: Command, log_dir: &Path) -> Result<ServiceProcess> {
        Self::spawn_inner(name, cmd, log_dir, false)
    }

    /// Like [`ServiceProcess::spawn_command`], but the child's stdin is a
    /// pipe whose write end only this process holds: the child sees the end
    /// of its input when this process exits in any way (also SIGKILL), so a
    /// child that stops at the end of its input cannot outlive the test.
    /// Kafka's JVMs run under `Tether` for this (see `crate::kafka`).
    pub fn spawn_tethered(name: &str, cmd: Command, log_dir: &Path) -> Result<ServiceProcess> {
        Self::spawn_inner(name, cmd, log_dir, true)
    }

    fn spawn_inner(
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
        tethered: bool,
    ) -> Result<ServiceProcess> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        cmd.stdin(if tethered {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(log.try_clone().context("duplicating log file")?)
        .stderr(log);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {name} ({:?})", cmd.get_program()))?;
        let tether = child.stdin.take();
        let pid = Pid::from_raw(
            i32::try_from(child.id()).map_err(|_| anyhow!("pid {} out of range", child.id()))?,
        );
        let state = Arc::new(ExitState::default());
        let waiter_state = state.clone();
        let waiter = std::thread::Builder::new()
            .name(format!("wait-{name}"))
            .spawn(move || {
                // Wait for the exit without reaping, so the pid stays ours
                // while a signal may still be sent under the lock below.
                while let Err(Errno::EINTR) =
                    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
                {
                }
                let mut status = waiter_state.lock();
                if let Ok(s) = child.wait() {
                    *status = Some(s);
                } else {
                    *status = Some(std::os::unix::process::ExitStatusExt::from_raw(-1));
                }
                drop(status);
                waiter_state.exited.notify_all();
            });
        let waiter = match waiter {
            Ok(w) => w,
            Err(e) => {
                // The child was moved into the failed closure and dropped;
                // make sure it does not outlive us.
                let _ = kill(pid, Signal::SIGKILL);
                return Err(e).context("spawning waiter thread");
            }
        };
        Ok(ServiceProcess {
            name: name.to_owned(),
            pid,
            log_path,
            state,
            waiter: Some(waiter),
            tether,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn is_running(&self) -> bool {
        self.state.lock().is_none()
    }

    /// Exit status, if it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.state.lock()
    }

    /// Sends `sig` unless the process has already exited (then a no-op).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let status = self.state.lock();
        if status.is_none() {
            kill(self.pid, sig).with_context(|| format!("sending {sig} to {}", self.name))?;
        }
        Ok(())
    }

    /// Asks for a graceful shutdown (SIGTERM). Follow with
    /// [`ServiceProcess::wait_exit`].
    pub fn sigterm(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// SIGKILL (a crash) and wait until the process is gone.
    pub fn kill9(&self) -> Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        self.wait_exit(KILL_WAIT)
    }

    /// Waits for the exit (woken by it, not polled) for at most `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let guard = self.state.lock();
        let (guard, _) = self
            .state
            .exited
            .wait_timeout_while(guard, timeout, |s| s.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        match *guard {
            Some(status) => Ok(status),
            None => bail!(
                "{} still running after {timeout:?}; log tail:\n{}",
                self.name,
                self.log_tail(30)
            ),
        }
    }

    /// The last `n` lines of the process log (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log_path, n)
    }

    /// Waits until `GET url` answers 2xx (readiness; polled every 50 ms, no
    /// event exists for it). Fails at once, with the log tail, if the
    /// process exits first.
    pub fn wait_http_ok(&self, url: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                bail!(
                    "{} exited ({status}) before {url} answered; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            let last_err = match http_get(url, Duration::from_secs(2)) {
                Ok(resp) if (200..300).contains(&resp.status) => return Ok(()),
                Ok(resp) => format!("status {}: {}", resp.status, resp.body),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready: {url} ({last_err}) after {timeout:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            // Wake early if the process exits meanwhile.
            let guard = self.state.lock();
            let _ = self
                .state
                .exited
                .wait_timeout_while(guard, Duration::from_millis(50), |s| s.is_none());
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.tether.take();
        let _ = self.signal(Signal::SIGKILL);
        let exited = self.wait_exit(KILL_WAIT).is_ok();
        if let Some(w) = self.waiter.take() {
            if exited {
                let _ = w.join();
            }
        }
    }
}

/// The last `n` lines of a file ("" if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A minimal HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET url` over HTTP/1.1 (plain `http://host:port/path` only), for health
/// and metrics endpoints. Handles `Content-Length`, chunked and
/// read-to-close bodies.
pub fn http_get(url: &str, timeout: Duration) -> Result<HttpResponse> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading response from {url}"))?;
    parse_response(&raw).with_context(|| format!("parsing response from {url}"))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().ok_or_else(|| anyhow!("empty response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(len) = length {
        body[..len.min(body.len())].to_vec()
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_hex:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}

/// Waits until `GET url` answers 2xx, polling every 50 ms up to `timeout`.
pub fn wait_http_ok(url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let err = match http_get(url, Duration::from_secs(2)) {
            Ok(resp) if (200..300).contains(&resp.status) => return Ok(()),
            Ok(resp) => format!("status {}", resp.status),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{url} not ready after {timeout:?}: {err}");
        }
        // Readiness has no event to wait on: poll.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
            .expect("plain response parses");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n6\r\n ready\r\n0\r\n\r\n",
        )
        .expect("chunked response parses");
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
    }
}
