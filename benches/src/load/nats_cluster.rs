//! A NATS cluster of this tool's own: `nats-server`s on free loopback
//! ports, each routed to all the others, for comparing an apm cluster with
//! a NATS cluster of as many nodes. Stopped on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::load::server::wait_until_listening;

/// Running `nats-server`s routed to each other.
#[derive(Debug)]
pub struct NatsCluster {
    children: Vec<Child>,
    /// Each node's client address, `127.0.0.1:PORT`.
    pub addrs: Vec<String>,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

impl NatsCluster {
    /// Starts `n` nodes and waits (at most 10 s) until a message published
    /// on any node reaches a subscriber on every other.
    pub async fn start(n: usize) -> Result<NatsCluster, String> {
        let mut client_ports = Vec::with_capacity(n);
        let mut route_ports = Vec::with_capacity(n);
        for _ in 0..n {
            client_ports.push(free_port()?);
            route_ports.push(free_port()?);
        }
        let mut cluster = NatsCluster {
            children: Vec::with_capacity(n),
            addrs: client_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
        };
        for i in 0..n {
            let routes: Vec<String> = (0..n)
                .filter(|j| *j != i)
                .map(|j| format!("nats://127.0.0.1:{}", route_ports[j]))
                .collect();
            let child = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &client_ports[i].to_string()])
                .args(["--cluster_name", "apm-load"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", route_ports[i]))
                .arg("--routes")
                .arg(routes.join(","))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start nats-server: {e}"))?;
            cluster.children.push(child);
        }
        for addr in &cluster.addrs {
            let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
            wait_until_listening(addr, "nats-server")?;
        }
        cluster.wait_for_routes().await?;
        Ok(cluster)
    }

    /// The nodes' pids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Publishes from every node to a subscriber on every other until each
    /// hears it: the routes are up.
    async fn wait_for_routes(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut clients = Vec::with_capacity(self.addrs.len());
        for addr in &self.addrs {
            clients.push(
                async_nats::connect(addr.as_str())
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        for (j, to) in clients.iter().enumerate() {
            let subject = format!("apm-load.routes.{j}");
            let mut sub = to
                .subscribe(subject.clone())
                .await
                .map_err(|e| e.to_string())?;
            to.flush().await.map_err(|e| e.to_string())?;
            for (i, from) in clients.iter().enumerate() {
                if i == j {
                    continue;
                }
                loop {
                    from.publish(subject.clone(), "probe".into())
                        .await
                        .map_err(|e| e.to_string())?;
                    let heard = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
                    if heard.is_ok() {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err("the NATS cluster's routes did not come up within 10 s".into());
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
