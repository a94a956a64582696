import Prometheus

/// What `GET /metrics` reports, in Prometheus' text format: requests by endpoint and status,
/// their latency, tokens in and out, the queue and the active sequences.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let promptTokens: Counter
    let generatedTokens: Counter
    let rejected: Counter
    let waiting: Gauge
    let active: Gauge
    let firstToken: DurationHistogram
    private static let latencyBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]
    /// The endpoints a label may name; anything else counts as "other" (a bounded label set).
    static let endpoints: Set<String> = [
        "/v1/completions", "/v1/models", "/health", "/metrics", "/tokenize", "/detokenize", "/tokenizer_info",
    ]

    public init() {
        promptTokens = registry.makeCounter(name: "mambaquant_prompt_tokens_total", help: "Prompt tokens run.")
        generatedTokens = registry.makeCounter(name: "mambaquant_generated_tokens_total", help: "Tokens generated.")
        rejected = registry.makeCounter(name: "mambaquant_rejected_sequences_total", help: "Requests refused because the queue was full or the server stopping.")
        waiting = registry.makeGauge(name: "mambaquant_queue_depth", help: "Sequences waiting for a slot.")
        active = registry.makeGauge(name: "mambaquant_active_sequences", help: "Sequences running.")
        firstToken = registry.makeDurationHistogram(
            name: "mambaquant_time_to_first_token_seconds", buckets: Self.latencyBuckets, help: "From a completion's arrival to its first token.")
    }

    func request(path: String, status: Int, duration: Duration) {
        let endpoint = Self.endpoints.contains(path) ? path : "other"
        registry.makeCounter(name: "mambaquant_http_requests_total", labels: [("endpoint", endpoint), ("status", String(status))],
                             help: "HTTP requests answered.").increment()
        registry.makeDurationHistogram(name: "mambaquant_http_request_duration_seconds", labels: [("endpoint", endpoint)],
                                       buckets: Self.latencyBuckets, help: "Time to the response head (streams: to the first byte).").record(duration)
    }

    /// The scheduler's load, as it changes.
    public func load(waiting w: Int, active a: Int) {
        waiting.set(to: Double(w))
        active.set(to: Double(a))
    }

    public func text() -> String { registry.emitToString() }
}
