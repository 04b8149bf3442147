//! nginx in front of the upstream, plain and with the README's `auth_request` config asking
//! keygate's verify route: what forward-auth costs another proxy.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One nginx process (single process, in the foreground) with two servers: `plain` proxies to
/// the upstream, `auth` is the README's `auth_request` server block in front of keygate's
/// verify route. Stopped when dropped.
pub struct Nginx {
    pub plain: SocketAddr,
    pub auth: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `None` when nginx is not installed.
    pub fn start(keygate: SocketAddr, upstream: SocketAddr) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().expect("addr") };
        let (plain, auth) = (addr(super::free_port()), addr(super::free_port()));
        let readme = include_str!("../../README.md");
        let block = readme
            .split("\n### nginx\n")
            .nth(1)
            .and_then(|s| s.split("```nginx\n").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("the README's nginx block");
        let server = block
            .replace("127.0.0.1:8080", &keygate.to_string())
            .replace("127.0.0.1:9000", &upstream.to_string())
            .replace("listen 127.0.0.1:80;", &format!("listen {auth};"));
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             {server}\n\
             server {{\n  listen {plain};\n  location / {{\n   proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\n   proxy_pass http://api;\n  }}\n }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            plain,
            auth,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log"));
                panic!("nginx exited ({status}): {}", log.unwrap_or_default());
            }
            if std::net::TcpStream::connect(plain).is_ok()
                && std::net::TcpStream::connect(auth).is_ok()
            {
                return Some(nginx);
            }
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
