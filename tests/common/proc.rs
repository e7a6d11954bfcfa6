//! The binary as a child process for end-to-end tests: stderr collected as
//! it comes, every wait bounded, SIGKILLed and reaped when dropped; temp
//! dirs removed when dropped; free ports.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meridian-pipeline");

/// A child process whose stderr lines are collected as they come. Dropping
/// it SIGKILLs and reaps it unless it was already reaped.
pub(crate) struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
    what: String,
}

impl Proc {
    pub(crate) fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc {
            child,
            lines,
            reader: Some(reader),
            status: None,
            what: args.join(" "),
        }
    }

    /// Starts `args` and waits (at most 10 s) for "listening on ADDR".
    /// Err with its stderr when it exits first (e.g. the port is taken).
    pub(crate) fn try_listening(args: &[&str]) -> Result<(Proc, String), Vec<String>> {
        let mut p = Proc::start(args);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = p
                .lines()
                .iter()
                .find_map(|l| l.split("listening on ").nth(1).map(str::to_string))
            {
                return Ok((p, addr));
            }
            if p.try_status().is_some() {
                p.join_reader();
                return Err(p.lines());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start listening: {:?}",
                p.what,
                p.lines()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Proc::try_listening`], retried a few times (a port just freed by a
    /// killed process may take a moment to bind again).
    pub(crate) fn listening(args: &[&str]) -> (Proc, String) {
        let mut last = Vec::new();
        for _ in 0..20 {
            match Proc::try_listening(args) {
                Ok(x) => return x,
                Err(lines) => last = lines,
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("{args:?} never started listening: {last:?}");
    }

    /// Waits (at most 10 s) for a stderr line containing `marker`; returns
    /// what follows it on that line.
    pub(crate) fn after(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self
                .lines()
                .iter()
                .find_map(|l| l.split(marker).nth(1).map(str::to_string))
            {
                return v;
            }
            assert!(
                self.try_status().is_none(),
                "{} exited: {:?}",
                self.what,
                self.lines()
            );
            assert!(
                Instant::now() < deadline,
                "no {marker:?} line from {}: {:?}",
                self.what,
                self.lines()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub(crate) fn join_reader(&mut self) {
        // The pipe closes when the process (and anything holding its stderr) is gone.
        if let Some(h) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill9(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait"));
        }
        self.join_reader();
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Waits (at most `within`) for the exit; SIGKILLs and panics after it.
    /// Returns the exit code.
    pub(crate) fn wait_code(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.try_status() {
                break s;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "{} still running after {within:?}: {:?}",
                    self.what,
                    self.lines()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        self.join_reader();
        status.code().unwrap_or(-1)
    }

    /// Waits for the exit (bounded), checks the code, returns the JSON last line.
    pub(crate) fn finish(&mut self, within: Duration, code: i32) -> Value {
        let got = self.wait_code(within);
        let lines = self.lines();
        assert_eq!(got, code, "{}: {lines:?}", self.what);
        self.json()
    }

    pub(crate) fn json(&self) -> Value {
        let lines = self.lines();
        let last = lines
            .iter()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON from {}: {lines:?}", self.what));
        serde_json::from_str(last).expect("JSON summary")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A temp dir removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("meridian-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}
