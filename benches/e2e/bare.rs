//! The floor keygate is held to: a pingora pass-through with nothing of keygate's in it (no
//! authentication, no header work, no metrics), the same pingora version and thread settings
//! (one worker thread, no work stealing, keygate's upstream keep-alive pool size) and the same
//! allocator, built in the same profile.
//! The bench binary re-executes itself with [`FLAG`] to run it as its own process, so it can be
//! pinned to keygate's CPU like keygate is.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// The first argument that turns the bench binary into the bare proxy.
pub const FLAG: &str = "--bare-pingora-proxy";

/// keygate's allocator (src/main.rs), so the floor does not differ by allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// When the bench binary was started as the bare proxy (`FLAG LISTEN UPSTREAM`), runs it and
/// gives its exit code; otherwise `None` and the bench goes on.
pub fn run_if_asked(args: &[String]) -> Option<ExitCode> {
    match args {
        [_, flag, listen, upstream, ..] if flag == FLAG => Some(serve(listen, upstream)),
        _ => None,
    }
}

/// Runs the bare proxy on `listen` in front of `upstream` until killed.
pub fn serve(listen: &str, upstream: &str) -> ExitCode {
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("bare proxy: bad upstream address {upstream}");
        return ExitCode::FAILURE;
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        // keygate's default `[server] upstream_keepalive_pool_size` (pingora's is 128), so
        // the floor keeps as many upstream connections as keygate does.
        upstream_keepalive_pool_size: 1024,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, PassThrough { upstream });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}

/// The bare proxy as a child process; killed when dropped.
pub struct Bare {
    pub addr: SocketAddr,
    child: Child,
}

impl Bare {
    pub fn start(upstream: SocketAddr, pinned: bool) -> Bare {
        let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port())
            .parse()
            .expect("addr");
        let exe = std::env::current_exe().expect("the bench binary's path");
        let mut command = if pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let child = command
            .args([FLAG, &addr.to_string(), &upstream.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the bare proxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the bare proxy did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bare { addr, child }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
