//! The servers a load run can target, and one publisher and one subscriber
//! connection for each, made alike: one TCP connection per client, Nagle
//! off, no client-side time-outs, large client-side buffers.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// apm-server, through apm-client.
    Apm,
    /// apm-server with TLS on its listener, through apm-client.
    #[serde(rename = "apm-tls")]
    ApmTls,
    /// nats-server, through async-nats.
    Nats,
    /// Redis pub/sub, through the redis crate.
    Redis,
    /// Mosquitto (MQTT 3.1.1, QoS 0), through rumqttc.
    Mqtt,
}

impl Target {
    /// The default loopback address of each peer.
    pub fn default_addr(self) -> &'static str {
        match self {
            Target::Apm | Target::ApmTls => "127.0.0.1:7600",
            Target::Nats => "127.0.0.1:4222",
            Target::Redis => "127.0.0.1:6379",
            Target::Mqtt => "127.0.0.1:1883",
        }
    }

    /// The server process's name, to find it in /proc.
    pub fn process_name(self) -> &'static str {
        match self {
            Target::Apm | Target::ApmTls => "apm-server",
            Target::Nats => "nats-server",
            Target::Redis => "redis-server",
            Target::Mqtt => "mosquitto",
        }
    }

    /// Whether this is apm, over TLS or not.
    pub fn is_apm(self) -> bool {
        matches!(self, Target::Apm | Target::ApmTls)
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Apm => "apm",
            Target::ApmTls => "apm-tls",
            Target::Nats => "nats",
            Target::Redis => "redis",
            Target::Mqtt => "mqtt",
        }
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        match s {
            "apm" => Ok(Target::Apm),
            "apm-tls" => Ok(Target::ApmTls),
            "nats" => Ok(Target::Nats),
            "redis" => Ok(Target::Redis),
            "mqtt" | "mosquitto" => Ok(Target::Mqtt),
            other => Err(format!(
                "unknown target {other:?}: apm, apm-tls, nats, redis or mqtt"
            )),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where to reach a target.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Which server.
    pub target: Target,
    /// `host:port`.
    pub addr: String,
    /// A cluster's nodes (apm, or NATS started by this tool): every
    /// node's `host:port` (the first is `addr`); each client goes to one,
    /// by its name.
    pub nodes: Vec<String>,
    /// For apm over TLS: the CA certificate(s) to trust, PEM; `None`
    /// trusts the system's roots.
    pub tls_ca: Option<Arc<[u8]>>,
    /// For apm: the server's token secret; its clients connect with
    /// tokens made from it. `None` connects them in dev mode.
    pub secret: Option<Arc<str>>,
}

/// How long the tokens this tool makes last: longer than any run, so the
/// server's expiry timers are armed but never fire.
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A user token for `user`, signed with `secret` (dev mode, an empty
/// token, without one).
pub fn token(secret: Option<&str>, user: &str) -> String {
    secret.map_or_else(String::new, |s| {
        apm_server::auth::mint(s.as_bytes(), user, apm_core::message::Role::User, TOKEN_TTL)
    })
}

impl Endpoint {
    /// An endpoint reached in the clear (or over TLS with the system's
    /// roots, for [`Target::ApmTls`]).
    pub fn new(target: Target, addr: String) -> Endpoint {
        Endpoint {
            target,
            nodes: vec![addr.clone()],
            addr,
            tls_ca: None,
            secret: None,
        }
    }

    /// An apm client for this endpoint, as `name`, over TLS for
    /// [`Target::ApmTls`].
    pub fn apm_builder(&self, name: &str) -> apm_client::ClientBuilder {
        let builder = apm_client::Client::builder(self.node_for(name).to_owned())
            .credentials(name, token(self.secret.as_deref(), name));
        match (self.target, &self.tls_ca) {
            (Target::ApmTls, Some(ca)) => builder.tls_ca_pem(ca.to_vec()),
            (Target::ApmTls, None) => builder.tls(),
            _ => builder,
        }
    }
}

impl Endpoint {
    /// The node a client named `name` connects to: spread by a hash of
    /// the name, so a channel's members and a pair's ends are spread over
    /// the nodes as a load balancer would.
    pub fn node_for(&self, name: &str) -> &str {
        if self.nodes.len() <= 1 {
            return &self.addr;
        }
        // FNV-1a: stable across runs and builds.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        &self.nodes[(hash % self.nodes.len() as u64) as usize]
    }
}

/// A failure to talk to a target.
#[derive(Debug, thiserror::Error)]
#[error("{target}: {what}")]
pub struct TargetError {
    target: Target,
    what: String,
}

fn fail(target: Target) -> impl Fn(String) -> TargetError {
    move |what| TargetError { target, what }
}

/// A topic name: a channel, or with apm, `@user` for a user's inbox.
pub type Topic = String;

/// A connection that publishes.
pub enum Publisher {
    /// apm.
    Apm(apm_client::Client),
    /// NATS.
    Nats(async_nats::Client),
    /// Redis: a multiplexed connection, commands pipelined.
    Redis(redis::aio::MultiplexedConnection),
    /// MQTT: the client handle; its event loop runs in its own task, which
    /// ends when the client disconnects.
    Mqtt(rumqttc::AsyncClient, tokio::task::JoinHandle<()>),
}

fn redis_client(addr: &str) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo;
    let info = format!("redis://{addr}")
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).map_err(|e| e.to_string())
}

fn mqtt_options(addr: &str, id: &str) -> Result<rumqttc::MqttOptions, String> {
    let (host, port) = addr.rsplit_once(':').ok_or("address needs host:port")?;
    let port: u16 = port.parse().map_err(|_| "bad port")?;
    let mut o = rumqttc::MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_clean_session(true);
    Ok(o)
}

fn mqtt_eventloop(
    client_opts: rumqttc::MqttOptions,
    cap: usize,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(client_opts, cap);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

impl Publisher {
    /// Connects as `name`.
    pub async fn connect(ep: &Endpoint, name: &str) -> Result<Publisher, TargetError> {
        let err = fail(ep.target);
        Ok(match ep.target {
            Target::Apm | Target::ApmTls => Publisher::Apm(
                ep.apm_builder(name)
                    .queue_size(8192)
                    .connect()
                    .await
                    .map_err(|e| err(e.to_string()))?,
            ),
            Target::Nats => Publisher::Nats(
                async_nats::ConnectOptions::new()
                    .name(name)
                    .client_capacity(65_536)
                    .connect(ep.node_for(name))
                    .await
                    .map_err(|e| err(e.to_string()))?,
            ),
            Target::Redis => {
                let client = redis_client(&ep.addr).map_err(&err)?;
                let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                Publisher::Redis(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map_err(|e| err(e.to_string()))?,
                )
            }
            Target::Mqtt => {
                let (client, mut eventloop) =
                    mqtt_eventloop(mqtt_options(&ep.addr, name).map_err(&err)?, 4096);
                // Wait for the CONNACK so a failure shows here.
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => break,
                        Ok(_) => {}
                        Err(e) => return Err(err(e.to_string())),
                    }
                }
                let task = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
                Publisher::Mqtt(client, task)
            }
        })
    }

    /// Publishes a batch to one topic, without waiting for any reply the
    /// server does not need to send.
    pub async fn publish(&mut self, topic: &str, payloads: &[Bytes]) -> Result<(), String> {
        match self {
            Publisher::Apm(c) => {
                let opts = apm_client::SendOptions::default();
                for p in payloads {
                    let r = match topic.strip_prefix('@') {
                        Some(user) => c.send_to_nowait(user, p.clone(), opts).await,
                        None => c.publish_nowait(topic, p.clone(), opts).await,
                    };
                    r.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Publisher::Nats(c) => {
                let subject = async_nats::Subject::from(topic);
                for p in payloads {
                    c.publish(subject.clone(), p.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Publisher::Redis(c) => {
                // One round trip per batch: redis-benchmark's -P.
                let mut pipe = redis::pipe();
                for p in payloads {
                    pipe.cmd("PUBLISH").arg(topic).arg(&p[..]).ignore();
                }
                pipe.query_async::<()>(c).await.map_err(|e| e.to_string())
            }
            Publisher::Mqtt(c, _) => {
                for p in payloads {
                    c.publish(topic, rumqttc::QoS::AtMostOnce, false, p.to_vec())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }

    /// Waits until everything published so far has left this client and
    /// reached the server.
    pub async fn finish(self) -> Result<(), String> {
        match self {
            // The ping is answered after every frame queued before it.
            Publisher::Apm(c) => c.ping().await.map(|_| ()).map_err(|e| e.to_string()),
            Publisher::Nats(c) => c.flush().await.map_err(|e| e.to_string()),
            // Each pipeline was awaited.
            Publisher::Redis(_) => Ok(()),
            Publisher::Mqtt(c, mut task) => {
                // DISCONNECT queues behind the publishes; the event loop
                // ends once it has written it.
                c.disconnect().await.map_err(|e| e.to_string())?;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await;
                Ok(())
            }
        }
    }

    /// Publishes one message and waits until the server has it (a receipt,
    /// a flush, a reply).
    pub async fn publish_sync(&mut self, topic: &str, payload: Bytes) -> Result<(), String> {
        match self {
            Publisher::Apm(c) => match topic.strip_prefix('@') {
                Some(user) => c.send_to(user, payload).await.map(|_| ()),
                None => c.publish(topic, payload).await.map(|_| ()),
            }
            .map_err(|e| e.to_string()),
            Publisher::Nats(c) => {
                c.publish(async_nats::Subject::from(topic), payload)
                    .await
                    .map_err(|e| e.to_string())?;
                c.flush().await.map_err(|e| e.to_string())
            }
            Publisher::Redis(_) | Publisher::Mqtt(..) => self.publish(topic, &[payload]).await,
        }
    }
}

/// A subscribed connection's messages: payloads only.
pub type Payloads = BoxStream<'static, Bytes>;

/// One stream of every payload of `streams`. A single stream is passed
/// through as it is: `SelectAll` re-queues its stream after every item,
/// which costs an allocation per message, and every target would pay it.
fn merge(mut streams: Vec<Payloads>) -> Payloads {
    if streams.len() == 1 {
        return streams.pop().expect("one stream");
    }
    streams.into_iter().collect::<SelectAll<_>>().boxed()
}

/// Connects as `name`, subscribes to every topic, and returns once every
/// subscription is live.
pub async fn subscribe(
    ep: &Endpoint,
    name: &str,
    topics: &[Topic],
) -> Result<Payloads, TargetError> {
    let err = fail(ep.target);
    match ep.target {
        Target::Apm | Target::ApmTls => {
            let c = ep
                .apm_builder(name)
                .stream_capacity(1 << 16)
                .connect()
                .await
                .map_err(|e| err(e.to_string()))?;
            let mut all: Vec<Payloads> = Vec::new();
            for t in topics {
                if t.starts_with('@') {
                    let inbox = c.messages().map_err(|e| err(e.to_string()))?;
                    all.push(inbox.map(|d| d.payload).boxed());
                } else {
                    let sub = c.subscribe(t).await.map_err(|e| err(e.to_string()))?;
                    all.push(sub.map(|d| d.payload).boxed());
                }
            }
            // The streams hold the client alive.
            Ok(merge(all))
        }
        Target::Nats => {
            let c = async_nats::ConnectOptions::new()
                .name(name)
                .subscription_capacity(1 << 16)
                .connect(ep.node_for(name))
                .await
                .map_err(|e| err(e.to_string()))?;
            let mut all: Vec<Payloads> = Vec::new();
            for t in topics {
                let sub = c
                    .subscribe(async_nats::Subject::from(t.as_str()))
                    .await
                    .map_err(|e| err(e.to_string()))?;
                // The client lives as long as the subscriber's stream.
                let keep = c.clone();
                all.push(
                    sub.map(move |m| {
                        let _ = &keep;
                        m.payload
                    })
                    .boxed(),
                );
            }
            // The flush's PONG proves the server processed the SUBs.
            c.flush().await.map_err(|e| err(e.to_string()))?;
            Ok(merge(all))
        }
        Target::Redis => {
            let client = redis_client(&ep.addr).map_err(&err)?;
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|e| err(e.to_string()))?;
            for t in topics {
                pubsub.subscribe(t).await.map_err(|e| err(e.to_string()))?;
            }
            Ok(pubsub
                .into_on_message()
                .map(|m| Bytes::copy_from_slice(m.get_payload_bytes()))
                .boxed())
        }
        Target::Mqtt => {
            let (client, mut eventloop) =
                mqtt_eventloop(mqtt_options(&ep.addr, name).map_err(&err)?, 64);
            for t in topics {
                client
                    .subscribe(t.as_str(), rumqttc::QoS::AtMostOnce)
                    .await
                    .map_err(|e| err(e.to_string()))?;
            }
            // rumqttc's subscription is live only after the SUBACK.
            let mut acks = 0;
            while acks < topics.len() {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => acks += 1,
                    Ok(_) => {}
                    Err(e) => return Err(err(e.to_string())),
                }
            }
            let stream =
                futures::stream::unfold((client, eventloop), |(client, mut el)| async move {
                    loop {
                        match el.poll().await {
                            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                                return Some((p.payload, (client, el)));
                            }
                            Ok(_) => {}
                            Err(_) => return None,
                        }
                    }
                });
            Ok(stream.boxed())
        }
    }
}
