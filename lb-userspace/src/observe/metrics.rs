//! Prometheus text exposition (by default on 127.0.0.1:9469, `/metrics`): packets by
//! verdict reason, per-service and per-real-server connections, packets, bytes, ActiveConn,
//! InActConn, weight and health, health-check latency histograms, and the XDP mode.
//!
//! Dataplane figures are read from the pinned maps (what `drlb status` shows) when scraped,
//! on a blocking thread: with thousands of services that reading takes tens of thousands
//! of system calls, which neither belongs on the controller's event loop nor needs doing
//! more often than Prometheus asks. Histograms are updated as checks complete.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::observe::status::Status;

type Labels = Vec<(String, String)>;

/// What the controller failed at and survived (`drlb_controller_errors_total{operation}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A reload the running configuration survived.
    Reload,
    /// Building the tables for the maps.
    Tables,
    /// Writing the maps.
    MapWrite,
    /// A sweep of the connection tables.
    Sweep,
    /// Reading the dataplane for a scrape.
    Metrics,
}

impl Failure {
    pub const ALL: [Failure; 5] = [Failure::Reload, Failure::Tables, Failure::MapWrite, Failure::Sweep, Failure::Metrics];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Reload => "reload",
            Failure::Tables => "tables",
            Failure::MapWrite => "map_write",
            Failure::Sweep => "sweep",
            Failure::Metrics => "metrics",
        }
    }
}

/// Reads the dataplane for a scrape (the controller's pin directory and configuration).
pub type StatusSource = Arc<dyn Fn() -> Result<Status> + Send + Sync>;

/// What the last reading of the dataplane showed.
#[derive(Debug, Default)]
struct Snapshot {
    status: Option<Status>,
    xdp_mode: String,
    /// The pinned XDP link: while it is there, the balancer is attached.
    link_pin: Option<std::path::PathBuf>,
}

#[derive(Debug)]
struct DataplaneCollector {
    snapshot: Arc<Mutex<Snapshot>>,
}

fn family<'a>(
    enc: &mut DescriptorEncoder<'a>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: Vec<(Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let e = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(e)?,
            _ => ConstGauge::new(v as i64).encode(e)?,
        }
    }
    Ok(())
}

impl Collector for DataplaneCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.snapshot.lock().expect("metrics snapshot lock");
        let l = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        // Looked at when scraped: 0 once the link's pin is gone (removed by hand, or by a
        // `drlb stop` of a controller that did not exit). A link whose interface was deleted
        // stays pinned: the controller logs that, not this gauge.
        let attached = snap.link_pin.as_ref().is_none_or(|p| p.exists());
        family(
            &mut enc,
            "drlb_xdp_attached",
            "1 while the balancer is attached (its XDP link is pinned), 0 when it is not, by XDP mode",
            MetricType::Gauge,
            vec![(l(&[("mode", &snap.xdp_mode)]), attached as u64)],
        )?;
        let Some(s) = &snap.status else { return Ok(()) };
        family(
            &mut enc,
            "drlb_packets",
            "Packets seen by the dataplane, by verdict reason",
            MetricType::Counter,
            s.reasons.iter().map(|(r, v)| (l(&[("reason", r)]), *v)).collect(),
        )?;
        family(
            &mut enc,
            "drlb_connection_events",
            "Connection events of the dataplane: half-open connections promoted into the connection table, or displaced before their handshake completed (a SYN flood)",
            MetricType::Counter,
            s.events.iter().map(|(e, v)| (l(&[("event", e)]), *v)).collect(),
        )?;
        let svc_labels = |svc: &crate::observe::status::ServiceStatus| -> Labels {
            let name = svc.name.clone().unwrap_or_default();
            l(&[("service", &name), ("vip", &svc.vip), ("port", &svc.port.to_string()), ("protocol", &svc.protocol)])
        };
        for (name, help, get) in [
            ("drlb_service_connections", "Connections scheduled for the service", (|s: &crate::observe::status::ServiceStatus| s.conns) as fn(&crate::observe::status::ServiceStatus) -> u64),
            ("drlb_service_in_packets", "Packets forwarded for the service", |s| s.in_pkts),
            ("drlb_service_in_bytes", "Bytes forwarded for the service", |s| s.in_bytes),
        ] {
            family(&mut enc, name, help, MetricType::Counter, s.services.iter().map(|svc| (svc_labels(svc), get(svc))).collect())?;
        }
        let rs_rows = |get: fn(&crate::observe::status::RealServerStatus) -> u64| -> Vec<(Labels, u64)> {
            s.services
                .iter()
                .flat_map(|svc| {
                    svc.real_servers.iter().map(move |rs| {
                        let mut labels = svc_labels(svc);
                        labels.push(("server".into(), rs.address.clone()));
                        (labels, get(rs))
                    })
                })
                .collect()
        };
        family(&mut enc, "drlb_real_server_connections", "Connections scheduled to the real server", MetricType::Counter, rs_rows(|r| r.conns))?;
        family(&mut enc, "drlb_real_server_in_packets", "Packets forwarded to the real server", MetricType::Counter, rs_rows(|r| r.in_pkts))?;
        family(&mut enc, "drlb_real_server_in_bytes", "Bytes forwarded to the real server", MetricType::Counter, rs_rows(|r| r.in_bytes))?;
        family(&mut enc, "drlb_real_server_active_connections", "ActiveConn (ESTABLISHED)", MetricType::Gauge, rs_rows(|r| r.active_conns as u64))?;
        family(&mut enc, "drlb_real_server_inactive_connections", "InActConn (other states)", MetricType::Gauge, rs_rows(|r| r.inactive_conns as u64))?;
        family(&mut enc, "drlb_real_server_weight", "Weight in effect", MetricType::Gauge, rs_rows(|r| r.weight as u64))?;
        family(&mut enc, "drlb_real_server_up", "1 when the real server takes new connections (healthy, MAC known)", MetricType::Gauge, rs_rows(|r| (r.health == "up") as u64))?;
        if let Some(c) = &s.controller {
            family(
                &mut enc,
                "drlb_vip_owned",
                "1 while this director's interface holds the VIP (VRRP master, or announced), 0 otherwise",
                MetricType::Gauge,
                c.vips.iter().map(|v| (l(&[("vip", &v.vip.to_string())]), v.owned as u64)).collect(),
            )?;
            family(
                &mut enc,
                "drlb_vip_owned_since_seconds",
                "Unix time when the VIP was last added to or removed from the interface",
                MetricType::Gauge,
                c.vips.iter().map(|v| (l(&[("vip", &v.vip.to_string())]), v.since)).collect(),
            )?;
            if let Some(a) = &c.announce {
                family(
                    &mut enc,
                    "drlb_vip_announced",
                    "1 while this director announces the VIP to the routers (director.announce), 0 while it is withdrawn",
                    MetricType::Gauge,
                    a.vips.iter().map(|v| (l(&[("vip", &v.vip.to_string())]), v.announced as u64)).collect(),
                )?;
                family(
                    &mut enc,
                    "drlb_vip_announced_since_seconds",
                    "Unix time when the VIP was last announced or withdrawn",
                    MetricType::Gauge,
                    a.vips.iter().map(|v| (l(&[("vip", &v.vip.to_string())]), v.since)).collect(),
                )?;
                family(&mut enc, "drlb_draining", "1 while drlb drains (withdrawn, waiting for the routers before detaching)", MetricType::Gauge, vec![(Vec::new(), a.draining as u64)])?;
            }
            if let Some(sync) = &c.sync {
                let n = |k: &crate::sync::Counter| sync.counters.get(k.name()).copied().unwrap_or(0);
                let all = crate::sync::Counter::ALL;
                family(
                    &mut enc,
                    "drlb_sync",
                    "Connection sync's work: datagrams and connections sent, received and installed",
                    MetricType::Counter,
                    all.iter().filter(|k| !k.is_rejection()).map(|k| (l(&[("event", k.name())]), n(k))).collect(),
                )?;
                family(
                    &mut enc,
                    "drlb_sync_rejected",
                    "Sync problems by reason: datagrams refused, connections not installed, sends failed, events lost",
                    MetricType::Counter,
                    all.iter().filter(|k| k.is_rejection()).map(|k| (l(&[("reason", k.name())]), n(k))).collect(),
                )?;
            }
        }
        Ok(())
    }
}

/// The registry and what feeds it.
pub struct Metrics {
    registry: Arc<Registry>,
    snapshot: Arc<Mutex<Snapshot>>,
    check_latency: Family<Labels, Histogram>,
    controller_errors: Family<Labels, Counter>,
    health_transitions: Family<Labels, Counter>,
    quorum: Family<Labels, Gauge>,
    /// The services `quorum` has a series for.
    quorum_services: Mutex<std::collections::HashSet<Labels>>,
    reload_ok: Gauge,
    maps_current: Gauge,
    reload_duration: Histogram,
    verdict_apply: Histogram,
    sweep_duration: Histogram,
    sweep_cpu: Counter<f64>,
    sweep_entries: Gauge,
    source: Mutex<Option<StatusSource>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(DataplaneCollector { snapshot: snapshot.clone() }));
        let check_latency =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 14)));
        registry.register(
            "drlb_health_check_duration_seconds",
            "Duration of health-check attempts, by service, server, check type and result",
            check_latency.clone(),
        );
        let controller_errors = Family::<Labels, Counter>::default();
        registry.register(
            "drlb_controller_errors",
            "Failures the controller survived, by operation (reload, tables, map_write, sweep, metrics)",
            controller_errors.clone(),
        );
        // At 0 from the start: a rate over the first error is then an increase from 0.
        for f in Failure::ALL {
            let _ = controller_errors.get_or_create(&vec![("operation".into(), f.label().into())]);
        }
        let health_transitions = Family::<Labels, Counter>::default();
        registry.register(
            "drlb_health_transitions",
            "Real servers' health changes, by service, server (address) and the state changed to (up, down)",
            health_transitions.clone(),
        );
        let quorum = Family::<Labels, Gauge>::default();
        registry.register(
            "drlb_service_quorum",
            "1 while the service has quorum (the weight of its up real servers reaches `quorum`), 0 when it lost it",
            quorum.clone(),
        );
        let reload_ok = Gauge::default();
        reload_ok.set(1);
        registry.register(
            "drlb_config_last_reload_successful",
            "0 after a reload was rejected (the previous configuration still serves), 1 otherwise",
            reload_ok.clone(),
        );
        let maps_current = Gauge::default();
        maps_current.set(1);
        registry.register(
            "drlb_maps_current",
            "1 when the dataplane's maps hold what the configuration and live state ask for; 0 while a failed update awaits its retry",
            maps_current.clone(),
        );
        let reload_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("drlb_reload_duration_seconds", "From a reload's signal to its maps written", reload_duration.clone());
        let verdict_apply = Histogram::new(exponential_buckets(0.0001, 2.0, 14));
        registry.register(
            "drlb_health_verdict_apply_seconds",
            "From the end of the health-check round that changed a real server's state to the dataplane's maps written",
            verdict_apply.clone(),
        );
        let sweep_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("drlb_sweep_duration_seconds", "Wall time of each sweep of the connection tables", sweep_duration.clone());
        let sweep_cpu = Counter::<f64>::default();
        registry.register("drlb_sweep_cpu_seconds", "CPU time the sweeper thread used", sweep_cpu.clone());
        let sweep_entries = Gauge::default();
        registry.register("drlb_sweep_entries", "Connection-table entries the last sweep read", sweep_entries.clone());
        Metrics {
            registry: Arc::new(registry),
            snapshot,
            check_latency,
            controller_errors,
            health_transitions,
            quorum,
            quorum_services: Mutex::new(std::collections::HashSet::new()),
            reload_ok,
            maps_current,
            reload_duration,
            verdict_apply,
            sweep_duration,
            sweep_cpu,
            sweep_entries,
            source: Mutex::new(None),
        }
    }

    /// Counts a failure the controller survived.
    pub fn controller_error(&self, operation: Failure) {
        self.controller_errors.get_or_create(&vec![("operation".into(), operation.label().into())]).inc();
    }

    pub fn set_reload_ok(&self, ok: bool) {
        self.reload_ok.set(ok as i64);
    }

    pub fn set_maps_current(&self, current: bool) {
        self.maps_current.set(current as i64);
    }

    /// The mode the balancer was attached in, and its pinned link (read at each scrape).
    pub fn set_attachment(&self, mode: &str, link_pin: Option<std::path::PathBuf>) {
        let mut snap = self.snapshot.lock().expect("metrics lock");
        snap.xdp_mode = mode.to_string();
        snap.link_pin = link_pin;
    }

    /// Counts a real server's health change (`server` as in the other per-server families).
    pub fn health_transition(&self, service: &str, server: &str, up: bool) {
        let labels: Labels =
            vec![("service".into(), service.into()), ("server".into(), server.into()), ("to".into(), if up { "up" } else { "down" }.into())];
        self.health_transitions.get_or_create(&labels).inc();
    }

    /// Each service's quorum, from the controller's map of service to "quorum lost";
    /// services no longer configured go.
    pub fn set_quorums<'a>(&self, lost: impl IntoIterator<Item = (&'a String, &'a bool)>) {
        let mut current = std::collections::HashSet::new();
        for (service, lost) in lost {
            let labels: Labels = vec![("service".into(), service.clone())];
            self.quorum.get_or_create(&labels).set(!*lost as i64);
            current.insert(labels);
        }
        // Only what is gone is removed: a scrape meanwhile never sees a service missing.
        for stale in self.quorum_services.lock().expect("metrics lock").drain().filter(|l| !current.contains(l)) {
            self.quorum.remove(&stale);
        }
        *self.quorum_services.lock().expect("metrics lock") = current;
    }

    /// Where scrapes read the dataplane from (set again when the configuration changes).
    pub fn set_source(&self, source: StatusSource) {
        *self.source.lock().expect("metrics lock") = Some(source);
    }

    /// Reads the dataplane into the snapshot, on a blocking thread.
    async fn refresh(self: &Arc<Self>) {
        let Some(source) = self.source.lock().expect("metrics lock").clone() else { return };
        match tokio::task::spawn_blocking(move || source()).await {
            Ok(Ok(status)) => self.set_status(status),
            Ok(Err(e)) => {
                tracing::debug!("reading the dataplane for metrics: {e:#}");
                self.controller_error(Failure::Metrics);
            }
            Err(e) => tracing::debug!("reading the dataplane for metrics: {e}"),
        }
    }

    pub fn set_status(&self, status: Status) {
        self.snapshot.lock().expect("metrics lock").status = Some(status);
    }

    /// A checker's latency histograms, failed and succeeded (index by `ok as usize`),
    /// looked up once per checker rather than once per check.
    pub fn check_histograms(&self, service: &str, server: &str, kind: &str) -> [Histogram; 2] {
        ["fail", "ok"].map(|result| {
            let labels: Labels = vec![
                ("service".into(), service.into()),
                ("server".into(), server.into()),
                ("type".into(), kind.into()),
                ("result".into(), result.into()),
            ];
            self.check_latency.get_or_create(&labels).clone()
        })
    }

    pub fn observe_reload(&self, took: Duration) {
        self.reload_duration.observe(took.as_secs_f64());
    }

    pub fn observe_verdict(&self, applied: Duration) {
        self.verdict_apply.observe(applied.as_secs_f64());
    }

    pub fn observe_sweep(&self, entries: usize, took: Duration, cpu: Duration) {
        self.sweep_duration.observe(took.as_secs_f64());
        self.sweep_cpu.inc_by(cpu.as_secs_f64());
        self.sweep_entries.set(entries as i64);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }

    /// Serves `GET /metrics` on `listen` until the task is aborted.
    pub async fn serve(self: Arc<Self>, listen: SocketAddr) -> Result<tokio::task::JoinHandle<()>> {
        let listener = TcpListener::bind(listen).await.with_context(|| format!("listening for metrics on {listen}"))?;
        Ok(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let metrics = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move {
                            let resp = if req.uri().path() == "/metrics" {
                                metrics.refresh().await;
                                hyper::Response::builder()
                                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                    .body(Full::new(Bytes::from(metrics.render())))
                            } else {
                                hyper::Response::builder().status(404).body(Full::new(Bytes::from_static(b"see /metrics\n")))
                            };
                            Ok::<_, hyper::http::Error>(resp.expect("static response"))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
