//! `GET /_lamina/metrics`: the engine's concurrency figures in the Prometheus text format.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use lamina_core::invoke::{AsyncMetrics, FunctionMetrics, Metrics};

use crate::SharedState;

pub const ROUTE: &str = "/_lamina/metrics";

pub async fn metrics(State(state): State<SharedState>) -> Response {
    let mut text = render(&state.invoker.metrics());
    render_async(&mut text, &state.events.metrics());
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render(metrics: &Metrics) -> String {
    let mut out = String::new();
    let account: [(&str, &str, &str, u64); 8] = [
        (
            "lamina_concurrency_limit",
            "gauge",
            "The account's concurrency limit.",
            u64::from(metrics.account_limit),
        ),
        (
            "lamina_unreserved_capacity",
            "gauge",
            "Concurrency on-demand invocations of unreserved functions may use.",
            u64::from(metrics.unreserved_capacity),
        ),
        (
            "lamina_concurrent_executions",
            "gauge",
            "Invocations in flight.",
            u64::from(metrics.in_use),
        ),
        (
            "lamina_unreserved_concurrent_executions",
            "gauge",
            "Invocations in flight drawing on the unreserved pool.",
            u64::from(metrics.unreserved_in_use),
        ),
        (
            "lamina_throttles_total",
            "counter",
            "Invocations throttled.",
            metrics.throttles,
        ),
        (
            "lamina_sandboxes_ready",
            "gauge",
            "Pre-built sandboxes waiting for a function.",
            u64::from(metrics.sandboxes_ready),
        ),
        (
            "lamina_memory_committed_bytes",
            "gauge",
            "Memory promised to execution environments.",
            metrics.memory_committed_mb << 20,
        ),
        (
            "lamina_memory_budget_bytes",
            "gauge",
            "Memory execution environments may be promised.",
            metrics.memory_budget_mb << 20,
        ),
    ];
    for (name, kind, help, value) in account {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    type Field = fn(&FunctionMetrics) -> Option<u64>;
    let per_function: [(&str, &str, &str, Field); 8] = [
        (
            "lamina_function_concurrent_executions",
            "gauge",
            "The function's invocations in flight.",
            |f| Some(u64::from(f.in_use)),
        ),
        (
            "lamina_function_reserved_concurrency",
            "gauge",
            "The function's reserved concurrency.",
            |f| f.reserved.map(u64::from),
        ),
        (
            "lamina_function_provisioned_concurrency_requested",
            "gauge",
            "Provisioned concurrency configured over the function's versions and aliases.",
            |f| Some(u64::from(f.provisioned_requested)),
        ),
        (
            "lamina_function_provisioned_concurrency_allocated",
            "gauge",
            "Provisioned execution environments initialised.",
            |f| Some(u64::from(f.provisioned_allocated)),
        ),
        (
            "lamina_function_instances",
            "gauge",
            "The function's execution environments alive.",
            |f| Some(u64::from(f.instances)),
        ),
        (
            "lamina_function_invocations_total",
            "counter",
            "Invocations admitted.",
            |f| Some(f.invocations),
        ),
        (
            "lamina_function_throttles_total",
            "counter",
            "Invocations throttled.",
            |f| Some(f.throttles),
        ),
        (
            "lamina_function_cold_starts_total",
            "counter",
            "Invocations that started an execution environment.",
            |f| Some(f.cold_starts),
        ),
    ];
    for (name, kind, help, field) in per_function {
        family(&mut out, name, kind, help);
        for function in &metrics.functions {
            // Function names are [a-zA-Z0-9-_]: nothing to escape in a label value.
            if let Some(value) = field(function) {
                let _ = writeln!(out, "{name}{{function=\"{}\"}} {value}", function.function);
            }
        }
    }
    out
}

fn render_async(out: &mut String, metrics: &AsyncMetrics) {
    let series: [(&str, &str, &str, u64); 11] = [
        (
            "lamina_async_events",
            "gauge",
            "Asynchronous events accepted and not yet finished.",
            metrics.depth,
        ),
        (
            "lamina_async_events_limit",
            "gauge",
            "Asynchronous events the queue holds at most.",
            metrics.max_depth,
        ),
        (
            "lamina_async_events_accepted_total",
            "counter",
            "Asynchronous events accepted.",
            metrics.accepted,
        ),
        (
            "lamina_async_events_refused_total",
            "counter",
            "Asynchronous events refused because the queue was full.",
            metrics.refused,
        ),
        (
            "lamina_async_attempts_total",
            "counter",
            "Attempts to run an asynchronous event, retries included.",
            metrics.attempts,
        ),
        (
            "lamina_async_events_succeeded_total",
            "counter",
            "Asynchronous events that succeeded.",
            metrics.succeeded,
        ),
        (
            "lamina_async_events_failed_total",
            "counter",
            "Asynchronous events that failed (retries exhausted, too old, no concurrency).",
            metrics.failed,
        ),
        (
            "lamina_async_events_dropped_total",
            "counter",
            "Asynchronous events dropped because their function was deleted.",
            metrics.dropped,
        ),
        (
            "lamina_async_dead_letter_failures_total",
            "counter",
            "Dead letters that could not be sent.",
            metrics.dead_letter_failures,
        ),
        (
            "lamina_async_destination_delivery_failures_total",
            "counter",
            "Invocation records that could not be delivered to their destination.",
            metrics.destination_failures,
        ),
        (
            "lamina_async_recursive_invocations_dropped_total",
            "counter",
            "Invocations not made because a chain of destinations looped (Lambda: RecursiveInvocationsDropped).",
            metrics.recursive_dropped,
        ),
    ];
    for (name, kind, help, value) in series {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_account_and_function_series() {
        let metrics = Metrics {
            account_limit: 1000,
            unreserved_capacity: 990,
            in_use: 3,
            throttles: 2,
            functions: vec![FunctionMetrics {
                function: "f".into(),
                reserved: Some(10),
                in_use: 3,
                invocations: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&metrics);
        for line in [
            "lamina_concurrency_limit 1000",
            "lamina_unreserved_capacity 990",
            "lamina_throttles_total 2",
            "# TYPE lamina_function_invocations_total counter",
            "lamina_function_concurrent_executions{function=\"f\"} 3",
            "lamina_function_reserved_concurrency{function=\"f\"} 10",
            "lamina_function_invocations_total{function=\"f\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
