//! A real `redis-server` per test, on a free port, with an append-only file fsynced on every
//! write so data survives SIGKILL (the tests kill and restart it to simulate outages).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A node for a Redis Cluster (`redis-cli --cluster create`), on a port whose cluster bus
    /// port is free too.
    pub fn start_cluster_node() -> RedisServer {
        Self::start_on(
            super::free_cluster_port,
            &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
        )
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_on(super::free_port, extra)
    }

    /// A port seen free can be taken by another test's process before redis binds it: then
    /// another port is picked (the root of a flake, not a retry of a flaky assertion).
    fn start_on(pick: fn() -> u16, extra: &[&str]) -> RedisServer {
        let mut r = RedisServer {
            port: pick(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..10 {
            match r.try_spawn() {
                Ok(()) => return r,
                Err(log) if log.contains("Address already in use") => {
                    if let Some(mut child) = r.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    let _ = std::fs::remove_file(r.dir.path().join("redis.log"));
                    r.port = pick();
                }
                Err(log) => panic!("redis-server did not start on port {}:\n{log}", r.port),
            }
        }
        panic!("redis-server found no free port in 10 tries")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("redis-server did not start on port {}:\n{log}", self.port);
        }
    }

    /// Starts redis-server and waits for PONG; the log when it does not come up.
    fn try_spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            let log =
                || std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                return Err(log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL: an outage, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGSTOP: Redis hangs. Connections stay open and the port accepts, but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        super::send_signal(self.child.as_ref().expect("redis-server is running"), which);
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `redis-cli` with `input` on its standard input, one command a line, and returns its
    /// stdout: one line per reply, strings quoted and escaped (`--no-raw`), binary ones too.
    pub fn cli_batch(&self, input: &str) -> String {
        use std::io::Write;
        let mut child = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--no-raw"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli");
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .expect("write to redis-cli");
        }
        let out = child.wait_with_output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs `redis-cli` against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A three-master Redis Cluster (no replicas) of [`RedisServer`] nodes, every node reporting
/// `cluster_state:ok` before `start` returns.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = nodes[0].cli(&args);
        assert!(
            out.contains("All 16384 slots covered"),
            "cluster create: {out}"
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the cluster never reported ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    /// The seed list a cluster client takes: every node's URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
