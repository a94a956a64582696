import Foundation
import Hummingbird
import HummingbirdTesting
import MambaModel
import MambaTensors
import TestSupport
import XCTest

@testable import MambaServe

/// Every endpoint, error path and limit through Hummingbird's in-process client.
final class ServerTests: XCTestCase {
    func makeService(limits: Scheduler.Limits = .init(), request: RequestLimits = .init()) -> CompletionService {
        let metrics = ServerMetrics()
        let scheduler = Scheduler(model: Bundled.mamba.0, tokenizer: Bundled.mamba.1, parallelism: Parallelism(threads: 2), limits: limits,
                                  onLoad: { metrics.load(waiting: $0, active: $1) })
        return CompletionService(scheduler: scheduler, modelName: "bard-mamba", limits: request, metrics: metrics)
    }

    func withServer(_ service: CompletionService, key: String? = nil, live: Bool = false,
                    _ test: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(router: makeRouter(service: service, apiKey: key))
        try await app.test(live ? .live : .router, test)
        service.scheduler.drainAndStop()
    }

    static func post(_ client: any TestClientProtocol, _ path: String, _ body: String, headers: HTTPFields = [:]) async throws -> TestResponse {
        var h = headers
        h[.contentType] = "application/json"
        return try await client.execute(uri: path, method: .post, headers: h, body: ByteBuffer(string: body))
    }

    static func object(_ r: TestResponse) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any], String(buffer: r.body))
    }

    static func errorMessage(_ r: TestResponse) throws -> String {
        try XCTUnwrap((object(r)["error"] as? [String: Any])?["message"] as? String)
    }

    func testHealthModelsMetricsAndUnknownRoutes() async throws {
        try await withServer(makeService()) { client in
            let health = try await client.execute(uri: "/health", method: .get)
            XCTAssertEqual(health.status, .ok)
            let models = try await client.execute(uri: "/v1/models", method: .get)
            let data = try XCTUnwrap(Self.object(models)["data"] as? [[String: Any]])
            XCTAssertEqual(data.first?["id"] as? String, "bard-mamba")
            let missing = try await client.execute(uri: "/v1/nothing", method: .get)
            XCTAssertEqual(missing.status, .notFound)
            XCTAssertTrue(try Self.errorMessage(missing).contains("/v1/nothing"))
            _ = try await Self.post(client, "/v1/completions", #"{"prompt": "KING:", "max_tokens": 3, "temperature": 0}"#)
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            XCTAssertTrue(metrics.contains(#"mambaquant_http_requests_total{endpoint="/v1/completions",status="200"} 1"#), metrics)
            XCTAssertTrue(metrics.contains(#"mambaquant_http_requests_total{endpoint="other",status="404"} 1"#), metrics)
            XCTAssertTrue(metrics.contains("mambaquant_generated_tokens_total 3"), metrics)
            XCTAssertTrue(metrics.contains("mambaquant_time_to_first_token_seconds_count 1"), metrics)
        }
    }

    /// lm-evaluation-harness's loglikelihood request (token ids, echo, logprobs 1, max_tokens 1):
    /// the prompt's log-probabilities equal log-softmax of the model's own logits.
    func testLoglikelihoodRequestAsLMEvalSendsIt() async throws {
        let (model, tokenizer) = Bundled.mamba
        let ids = [tokenizer.encode("To be, or not"), tokenizer.encode(" to be")]
        try await withServer(makeService()) { client in
            let body = #"{"model": "bard-mamba", "prompt": [\#(ids[0]), \#(ids[1])], "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": true}"#
            let r = try await Self.post(client, "/v1/completions", body)
            XCTAssertEqual(r.status, .ok, String(buffer: r.body))
            let choices = try XCTUnwrap(Self.object(r)["choices"] as? [[String: Any]])
            XCTAssertEqual(choices.map { $0["index"] as? Int }, [0, 1])
            for (i, choice) in choices.enumerated() {
                let lp = try XCTUnwrap(choice["logprobs"] as? [String: Any])
                let values = try XCTUnwrap(lp["token_logprobs"] as? [Any])
                let top = try XCTUnwrap(lp["top_logprobs"] as? [Any])
                XCTAssertEqual(values.count, ids[i].count + 1, "the prompt and the one new token")
                XCTAssertTrue(values[0] is NSNull)
                let logits = try model.logits(ids[i])
                let v = logits.cols
                for t in 1..<ids[i].count {
                    let row = Array(logits.storage[((t - 1) * v)..<(t * v)])
                    let lse = log(row.reduce(0.0) { $0 + exp(Double($1)) })
                    XCTAssertEqual(try XCTUnwrap(values[t] as? Double), Double(row[ids[i][t]]) - lse, accuracy: 1e-4)
                    let best = try XCTUnwrap(top[t] as? [String: Double]).values.max()!
                    XCTAssertEqual(best, Double(row.max()!) - lse, accuracy: 1e-4, "top_logprobs holds the most likely token")
                }
                XCTAssertTrue((choice["text"] as? String)?.hasPrefix(tokenizer.decode(ids[i])) ?? false)
            }
        }
    }

    /// The streamed text is the text of the same request unstreamed, then `[DONE]`.
    func testStreamedTextEqualsTheWholeResponse() async throws {
        try await withServer(makeService(), live: true) { client in
            let request = #"{"prompt": "ROMEO:", "max_tokens": 12, "temperature": 0, "stop": ["zzz"]}"#
            let whole = try await Self.post(client, "/v1/completions", request)
            let text = try XCTUnwrap((Self.object(whole)["choices"] as? [[String: Any]])?.first?["text"] as? String)
            let streamed = try await Self.post(client, "/v1/completions", String(request.dropLast()) + #", "stream": true}"#)
            XCTAssertEqual(streamed.headers[.contentType], "text/event-stream")
            let events = String(buffer: streamed.body).components(separatedBy: "\n\n").filter { !$0.isEmpty }
            XCTAssertEqual(events.last, "data: [DONE]")
            var joined = ""
            var reasons: [String] = []
            for e in events.dropLast() {
                let chunk = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(e.dropFirst(6).utf8)) as? [String: Any])
                let choice = try XCTUnwrap((chunk["choices"] as? [[String: Any]])?.first)
                joined += choice["text"] as? String ?? ""
                if let r = choice["finish_reason"] as? String { reasons.append(r) }
            }
            XCTAssertEqual(joined, text)
            XCTAssertEqual(reasons, ["length"])
            // stream_options.include_usage: a last chunk with the usage and no choices.
            let counted = try await Self.post(client, "/v1/completions", String(request.dropLast()) + #", "stream": true, "stream_options": {"include_usage": true}}"#)
            let chunks = String(buffer: counted.body).components(separatedBy: "\n\n").filter { !$0.isEmpty }
            let usage = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(chunks[chunks.count - 2].dropFirst(6).utf8)) as? [String: Any])
            XCTAssertEqual((usage["choices"] as? [Any])?.count, 0)
            XCTAssertEqual((usage["usage"] as? [String: Any])?["completion_tokens"] as? Int, 12)
        }
    }

    func testRequestErrorsAreOpenAIErrorsWithTheirStatus() async throws {
        var request = RequestLimits()
        request.maxPromptTokens = 20
        request.maxBodyBytes = 2048
        try await withServer(makeService(request: request)) { client in
            let cases: [(String, HTTPResponse.Status, String)] = [
                (#"{"prompt": "x", "n": 2}"#, .badRequest, "n must be 1"),
                (#"{"prompt": "x", "temperature": 3}"#, .badRequest, "temperature"),
                (#"{"prompt": "x", "top_p": 0}"#, .badRequest, "top_p"),
                (#"{"prompt": "x", "logprobs": 50}"#, .badRequest, "logprobs"),
                (#"{"prompt": "x", "max_tokens": 100000}"#, .badRequest, "max_tokens"),
                (#"{"prompt": [1, 2, 99999]}"#, .badRequest, "99999"),
                (#"{"prompt": []}"#, .badRequest, "prompt"),
                (#"{"prompt": "\#(String(repeating: "a", count: 30))"}"#, .badRequest, "at most 20"),
                (#"{"max_tokens": 3}"#, .badRequest, "prompt"),
                (#"{"prompt": 5}"#, .badRequest, "prompt"),
                (#"{"prompt": "x", "max_tokens": "many"}"#, .badRequest, "max_tokens"),
                ("not json", .badRequest, "not valid JSON"),
                (#"{"prompt": "x", "model": "gpt-4"}"#, .notFound, "gpt-4"),
                (#"{"prompt": "\#(String(repeating: "a", count: 4000))"}"#, .contentTooLarge, "2048 bytes"),
            ]
            for (body, status, words) in cases {
                let r = try await Self.post(client, "/v1/completions", body)
                XCTAssertEqual(r.status, status, body)
                XCTAssertTrue(try Self.errorMessage(r).contains(words), "\(body): \(String(buffer: r.body))")
            }
        }
    }

    func testAPIKeyIsRequiredWhenSet() async throws {
        try await withServer(makeService(), key: "s3cret") { client in
            for headers: HTTPFields in [[:], [.authorization: "Bearer wrong"], [.authorization: "s3cret"], [.authorization: "Bearer s3cret2"]] {
                let r = try await client.execute(uri: "/v1/models", method: .get, headers: headers)
                XCTAssertEqual(r.status, .unauthorized, "\(headers)")
                XCTAssertEqual((try Self.object(r)["error"] as? [String: Any])?["code"] as? String, "invalid_api_key")
            }
            let ok = try await client.execute(uri: "/v1/models", method: .get, headers: [.authorization: "Bearer s3cret"])
            XCTAssertEqual(ok.status, .ok)
        }
        XCTAssertTrue(constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        XCTAssertFalse(constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        XCTAssertFalse(constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        XCTAssertFalse(constantTimeEqual([], Array("a".utf8)))
    }

    /// With one sequence running and no queue, a second request gets 429 at once; the server then serves again.
    func testFullQueueAnswers429AtOnce() async throws {
        let service = makeService(limits: .init(maxConcurrency: 1, maxQueue: 0))
        try await withServer(service) { client in
            // Long enough to pass the one-second disconnect check on a fast machine (600 tokens of
            // the bundled model once took under a second in a debug build).
            let long = Task { try await Self.post(client, "/v1/completions", #"{"prompt": "KING:", "max_tokens": 2000}"#) }
            while service.scheduler.load.active == 0 { try await Task.sleep(for: .milliseconds(5)) }
            let clock = ContinuousClock(), start = clock.now
            let refused = try await Self.post(client, "/v1/completions", #"{"prompt": "KING:", "max_tokens": 1}"#)
            XCTAssertEqual(refused.status, .tooManyRequests)
            XCTAssertLessThan(clock.now - start, .seconds(2))
            // Past a second the answer comes after spaces (the disconnect check), still one JSON object.
            let finished = try await long.value
            XCTAssertEqual(finished.status, .ok)
            XCTAssertTrue(String(buffer: finished.body).hasPrefix(" "))
            let usage = try XCTUnwrap(Self.object(finished)["usage"] as? [String: Any])
            XCTAssertEqual(usage["completion_tokens"] as? Int, 2000)
            let after = try await Self.post(client, "/v1/completions", #"{"prompt": "KING:", "max_tokens": 1}"#)
            XCTAssertEqual(after.status, .ok)
        }
    }

    func testTokenizerEndpoints() async throws {
        let tokenizer = Bundled.mamba.1
        try await withServer(makeService()) { client in
            let t = try await Self.post(client, "/tokenize", #"{"prompt": "Good night", "add_special_tokens": false}"#)
            let ids = try XCTUnwrap(Self.object(t)["tokens"] as? [Int])
            XCTAssertEqual(ids, tokenizer.encode("Good night"))
            let d = try await Self.post(client, "/detokenize", #"{"tokens": \#(ids)}"#)
            XCTAssertEqual(try Self.object(d)["prompt"] as? String, "Good night")
            let bad = try await Self.post(client, "/detokenize", #"{"tokens": [-1]}"#)
            XCTAssertEqual(bad.status, .badRequest)
            let info = try Self.object(try await client.execute(uri: "/tokenizer_info", method: .get))
            XCTAssertTrue(info.keys.contains("eos_token"), "lm-eval probes eos_token")
        }
    }
}
