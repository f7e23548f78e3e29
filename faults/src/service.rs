//! A server process of the suite: started, waited for, killed, restarted,
//! with its log kept.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ready {
    /// It accepts TCP connections.
    Tcp,
    /// `GET /healthz` answers 200.
    Health,
    /// Started; the caller waits for what it needs (a Kafka node opens its
    /// port only once its quorum has formed, which takes its peers).
    Spawned,
}

/// One process of the system, restartable on the same port and data.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) ready: Ready,
    /// The cluster's data folder, the process's working folder.
    pub(crate) dir: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) child: Option<Child>,
}

impl Service {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts the process (again) and waits until it is up (30 s at most).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.program.display()));
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = match self.ready {
                Ready::Spawned => true,
                Ready::Tcp => tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok(),
                Ready::Health => http
                    .get(format!("{}/healthz", self.base()))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200),
            };
            if up {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status}; log: {}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(Instant::now() < deadline, "{} did not come up", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash would: nothing runs on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a deploy would, and waits until it is gone (30 s).
    pub async fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A crash and its restart: SIGKILL, and after `down` starts it again.
    pub async fn crash_for(&mut self, down: Duration) {
        self.kill();
        tokio::time::sleep(down).await;
        self.start().await;
    }

    /// A deploy's restart: SIGTERM, and once it is gone starts it again.
    pub async fn restart(&mut self) {
        self.terminate().await;
        self.start().await;
    }

    /// Sets (or overrides) environment for the next start.
    pub fn add_env(&mut self, env: &[(String, String)]) {
        for (key, value) in env {
            self.env.retain(|(k, _)| k != key);
            self.env.push((key.clone(), value.clone()));
        }
    }

    /// Freezes the process (SIGSTOP): it holds its sockets and answers
    /// nothing, as a hung or partitioned host would.
    pub fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.pid().to_string()])
            .status();
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Resident memory not backed by a file (heaps, stacks) in KiB; the
    /// rest of the RSS is the mapped binary and libraries.
    pub fn rss_anon_kib(&self) -> u64 {
        self.status_kib("RssAnon")
    }

    /// A `kB` field of `/proc/<pid>/status`.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("process status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in {status}"))
    }

    /// Open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("fd folder")
            .count()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
