//! Logs (tracing) and metrics (a Prometheus recorder), set up once per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the tracing subscriber: `RUST_LOG` filters (default `info`), `LOG_FORMAT` shapes.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The process-wide metrics recorder, every series labelled `node` with this node's id (several
/// nodes behind one Prometheus stay apart). The `metrics` facade has one global recorder, so
/// servers started in one process (as tests do) share it, with the first one's label; each
/// renders the same registry of metrics.
pub fn metrics_handle(node_id: &str) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().add_global_label("node", node_id).build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; we then render an empty one.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("switchboard_ws_connections", "Open WebSocket connections by channel");
    describe_gauge!("switchboard_subscriptions", "Active GraphQL subscriptions by field");
    describe_counter!(
        "switchboard_http_timeouts_total",
        "HTTP connections closed for taking too long, by phase (header, body, idle, response_stalled)"
    );
    describe_counter!("switchboard_events_published_total", "Events published, by the key kind of the entity");
    describe_counter!("switchboard_events_delivered_total", "Events handed to subscribers and room members");
    describe_counter!(
        crate::events::slow_consumer::METRIC,
        "Consumers too slow to keep up, once each: a queue was full, nothing more is queued for them, \
         and their socket is closed with 1013"
    );
    describe_counter!(
        crate::events::slow_consumer::DROPPED_METRIC,
        "Deliveries refused to slow consumers (the one that found a queue full and every later one); \
         their subscribers resume past them by cursor"
    );
    describe_gauge!("switchboard_rooms", "Rooms with at least one connection");
    describe_gauge!("switchboard_presence_members", "Room members (one per user and room)");
    describe_counter!("switchboard_rejected_messages_total", "WebSocket messages refused, by channel and reason");
    describe_gauge!(
        "switchboard_backplane_up",
        "1 while this node hears the Redis backplane (its probes come back), else 0"
    );
    describe_gauge!(
        "switchboard_backplane_waiting",
        "Events from other nodes waiting behind a hole in the log positions"
    );
    describe_counter!(
        "switchboard_backplane_repaired_total",
        "Events a node read from the log because Redis did not bring them"
    );
    describe_counter!(
        "switchboard_backplane_publish_skipped_total",
        "Events not published to Redis because its queue was full (other nodes read them from the log)"
    );
    describe_gauge!("switchboard_shared_subscriptions", "Groups of identical subscriptions sharing one execution");
    describe_counter!(
        "switchboard_subscription_executions_total",
        "Subscription executions: one per event per group, however many members it has"
    );
}
