//! Prometheus metrics, served as text at `/metrics`: requests and latencies, decisions by kind and
//! reason, inference time per stage.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 0.5 ms to 10 s: understanding takes milliseconds, uploads seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Waiting and handling times, from seconds to hours.
const HUMAN_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Each server owns its registry, so several servers in one test process never share counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub decisions: IntCounterVec,
    pub decision_reasons: IntCounterVec,
    pub inference_duration: HistogramVec,
    pub knowledge_chunks: IntGauge,
    pub queue_length: IntGaugeVec,
    pub time_to_assignment: Histogram,
    pub first_response: Histogram,
    pub handle_time: Histogram,
    pub reassignments: IntCounterVec,
    pub connected_customers: IntGauge,
    pub connected_agents: IntGauge,
    pub webhooks: IntCounterVec,
    pub pii_masked: IntCounterVec,
    pub llm_requests: IntCounterVec,
    pub llm_first_token: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("baton".into()), None)
            .expect("static metric prefix is valid");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("static metric definition is valid");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("static metric definition is valid");
        let decisions = IntCounterVec::new(
            Opts::new("decisions_total", "Bot decisions by kind"),
            &["decision"],
        )
        .expect("static metric definition is valid");
        let decision_reasons = IntCounterVec::new(
            Opts::new(
                "decision_reasons_total",
                "Reasons recorded on bot decisions",
            ),
            &["decision", "reason"],
        )
        .expect("static metric definition is valid");
        let inference_duration = HistogramVec::new(
            HistogramOpts::new("inference_duration_seconds", "Time per understanding stage")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("static metric definition is valid");
        let knowledge_chunks = IntGauge::new("knowledge_chunks", "Chunks in the vector index")
            .expect("static metric definition is valid");
        let queue_length = IntGaugeVec::new(
            Opts::new("queue_length", "Conversations waiting, by skill"),
            &["skill"],
        )
        .expect("static metric definition is valid");
        let human_histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(HUMAN_BUCKETS.to_vec()))
                .expect("static metric definition is valid")
        };
        let time_to_assignment = human_histogram(
            "time_to_assignment_seconds",
            "From joining the queue to an agent holding the conversation",
        );
        let first_response = human_histogram(
            "first_agent_response_seconds",
            "From assignment to the agent's first message",
        );
        let handle_time = human_histogram(
            "handle_time_seconds",
            "From assignment to resolution or hand-back",
        );
        let reassignments = IntCounterVec::new(
            Opts::new(
                "reassignments_total",
                "Conversations taken back from an agent, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition is valid");
        let connected_customers =
            IntGauge::new("connected_customers", "Customer WebSocket connections")
                .expect("static metric definition is valid");
        let connected_agents = IntGauge::new("connected_agents", "Agent WebSocket connections")
            .expect("static metric definition is valid");
        let webhooks = IntCounterVec::new(
            Opts::new(
                "webhook_deliveries_total",
                "Webhook deliveries by target and outcome",
            ),
            &["target", "outcome"],
        )
        .expect("static metric definition is valid");
        let pii_masked = IntCounterVec::new(
            Opts::new(
                "pii_masked_total",
                "Personal or payment data masked in incoming text, by kind",
            ),
            &["kind"],
        )
        .expect("static metric definition is valid");
        let llm_requests = IntCounterVec::new(
            Opts::new(
                "llm_requests_total",
                "Calls to the LLM by task (answer, rewrite, draft, summary) and outcome (answered, declined, timeout, error, circuit_open, empty)",
            ),
            &["task", "outcome"],
        )
        .expect("static metric definition is valid");
        let llm_first_token = Histogram::with_opts(
            HistogramOpts::new(
                "llm_first_token_seconds",
                "From sending the prompt to the LLM's first token",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric definition is valid");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(decisions.clone()),
            Box::new(decision_reasons.clone()),
            Box::new(inference_duration.clone()),
            Box::new(knowledge_chunks.clone()),
            Box::new(queue_length.clone()),
            Box::new(time_to_assignment.clone()),
            Box::new(first_response.clone()),
            Box::new(handle_time.clone()),
            Box::new(reassignments.clone()),
            Box::new(connected_customers.clone()),
            Box::new(connected_agents.clone()),
            Box::new(webhooks.clone()),
            Box::new(pii_masked.clone()),
            Box::new(llm_requests.clone()),
            Box::new(llm_first_token.clone()),
        ] {
            registry
                .register(collector)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            decisions,
            decision_reasons,
            inference_duration,
            knowledge_chunks,
            queue_length,
            time_to_assignment,
            first_response,
            handle_time,
            reassignments,
            connected_customers,
            connected_agents,
            webhooks,
            pii_masked,
            llm_requests,
            llm_first_token,
        }
    }

    /// `text` with personal and payment data masked, what was found counted by kind.
    pub fn masked(&self, masker: &crate::privacy::Masker, text: &str) -> String {
        let masked = masker.mask(text);
        for kind in &masked.found {
            self.pii_masked.with_label_values(&[kind.as_str()]).inc();
        }
        masked.text
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    pub fn observe_stage(&self, stage: &str, seconds: f64) {
        self.inference_duration
            .with_label_values(&[stage])
            .observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
