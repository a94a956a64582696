import Foundation
import Hummingbird
import MambaModel

/// The HTTP side of `serve` (docs/DESIGN.md, "Serving"): OpenAI's completions and models
/// endpoints, vLLM's tokenizer endpoints (lm-evaluation-harness tokenizes through them), health and
/// Prometheus metrics, behind an optional bearer key.
public struct ServerOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// Every request needs `Authorization: Bearer <key>` when set.
    public var apiKey: String?
    public init() {}
}

public func makeRouter(service: CompletionService, apiKey: String?) -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: MetricsAndErrors(metrics: service.metrics))
    if let apiKey { router.add(middleware: BearerKey(key: apiKey)) }
    let limit = service.limits.maxBodyBytes
    let tokenizer = service.tokenizer

    router.get("/health") { _, _ in
        json(["status": "ok"])
    }
    router.get("/v1/models") { _, _ in
        struct Model: Encodable { let id: String; let object = "model"; let created: Int; let owned_by = "mambaquant" }
        struct List: Encodable { let object = "list"; let data: [Model] }
        return json(List(data: [Model(id: service.modelName, created: service.created)]))
    }
    router.get("/metrics") { _, _ in
        Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(string: service.metrics.text())))
    }
    router.post("/v1/completions") { request, _ in
        let body = try await decode(CompletionRequest.self, request, limit: limit)
        if body.stream ?? false {
            // A client that goes away fails the next write, which ends (and cancels) the events.
            let events = try service.stream(body)
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                            body: ResponseBody(asyncSequence: events.map { ByteBuffer(string: $0) }))
        }
        return await completion(of: body, service)
    }
    // vLLM's tokenizer endpoints, as lm-evaluation-harness's remote tokenizer calls them.
    router.get("/tokenizer_info") { _, _ in
        struct Info: Encodable {
            let eos_token: String?, bos_token: String?, pad_token: String?, model_max_length: Int
            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(eos_token, forKey: .eos_token)
                try c.encode(bos_token, forKey: .bos_token)
                try c.encode(pad_token, forKey: .pad_token)
                try c.encode(model_max_length, forKey: .model_max_length)
            }
            enum CodingKeys: String, CodingKey { case eos_token, bos_token, pad_token, model_max_length }
        }
        let eos = tokenizer.endOfText.map { String(decoding: tokenizer.decodeBytes([$0], skipSpecial: false), as: UTF8.self) }
        let bos = tokenizer.specialPrefix.first.map { String(decoding: tokenizer.decodeBytes([$0], skipSpecial: false), as: UTF8.self) }
        return json(Info(eos_token: eos, bos_token: bos, pad_token: nil, model_max_length: service.limits.maxPromptTokens))
    }
    router.post("/tokenize") { request, _ in
        struct Body: Decodable { let prompt: String; let add_special_tokens: Bool? }
        struct Out: Encodable { let tokens: [Int]; let count: Int; let max_model_len: Int }
        let b = try await decode(Body.self, request, limit: limit)
        let ids = tokenizer.encode(b.prompt, addSpecialTokens: b.add_special_tokens ?? true)
        return json(Out(tokens: ids, count: ids.count, max_model_len: service.limits.maxPromptTokens))
    }
    router.post("/detokenize") { request, _ in
        struct Body: Decodable { let tokens: [Int] }
        let b = try await decode(Body.self, request, limit: limit)
        let vocab = service.scheduler.model.vocabSize
        if let bad = b.tokens.first(where: { $0 < 0 || $0 >= vocab }) {
            throw APIError.invalid("token id \(bad) is outside the vocabulary [0, \(vocab))", param: "tokens")
        }
        return json(["prompt": tokenizer.decode(b.tokens)])
    }
    return router
}

/// A whole (unstreamed) completion. Hummingbird does not cancel a handler whose client went away,
/// and nothing reads the connection while the model runs, so only a write can tell: an answer ready
/// within a second is sent as usual (with its own status); a longer one sends a space (JSON allows
/// leading whitespace) every second until it is ready, and a failed write cancels the work. Past
/// that second the status is 200 and a late failure arrives as the body's error object.
func completion(of body: CompletionRequest, _ service: CompletionService) async -> Response {
    let done = Outcome<CompletionResponse>()
    let work = Task {
        do { done.set(.success(try await service.complete(body))) } catch { done.set(.failure(error)) }
    }
    if let result = await done.wait(upTo: .seconds(1)) {
        let (status, bytes) = encoded(result)
        return Response(status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: bytes))
    }
    return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody { writer in
        defer { work.cancel() }   // no-op once done; cancels the work when a write fails
        while true {
            if let result = await done.wait(upTo: .seconds(1)) {
                try await writer.write(encoded(result).1)
                break
            }
            try await writer.write(ByteBuffer(string: " "))
        }
        try await writer.finish(nil)
    })
}

/// A finished completion as its status and JSON body.
func encoded(_ r: Result<CompletionResponse, any Error>) -> (Int, ByteBuffer) {
    switch r {
    case .success(let value): (200, ByteBuffer(bytes: (try? JSONEncoder().encode(value)) ?? Data()))
    case .failure(let e as APIError): (e.status, ByteBuffer(bytes: e.json))
    case .failure(let e): (500, ByteBuffer(bytes: APIError(status: 500, "\(e)").json))
    }
}

/// A result that arrives once, awaited with a time limit (the work goes on past it).
final class Outcome<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, any Error>?
    private var waiter: CheckedContinuation<Result<T, any Error>?, Never>?
    /// Which wait a timer belongs to: a late timer of an earlier wait leaves a later one alone.
    private var generation = 0

    func set(_ r: Result<T, any Error>) {
        let w: CheckedContinuation<Result<T, any Error>?, Never>? = lock.withLock {
            result = r
            defer { waiter = nil }
            return waiter
        }
        w?.resume(returning: r)
    }

    /// The result, or nil if it has not arrived within `limit`. One waiter at a time.
    func wait(upTo limit: Duration) async -> Result<T, any Error>? {
        await withCheckedContinuation { continuation in
            let (ready, mine): (Result<T, any Error>?, Int) = lock.withLock {
                generation += 1
                if result == nil { waiter = continuation }
                return (result, generation)
            }
            if let ready { return continuation.resume(returning: ready) }
            Task {
                try? await Task.sleep(for: limit)
                let w: CheckedContinuation<Result<T, any Error>?, Never>? = self.lock.withLock {
                    guard self.generation == mine else { return nil }
                    defer { self.waiter = nil }
                    return self.waiter
                }
                w?.resume(returning: nil)
            }
        }
    }
}

/// A JSON body of at most `limit` bytes, decoded; a 413 or a 400 that names the problem otherwise.
func decode<T: Decodable>(_ type: T.Type, _ request: Request, limit: Int) async throws -> T {
    let buffer: ByteBuffer
    do {
        buffer = try await request.body.collect(upTo: limit)
    } catch {
        throw APIError(status: 413, "the request body is over \(limit) bytes")
    }
    do {
        return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
    } catch let DecodingError.keyNotFound(key, _) {
        throw APIError.invalid("the request has no `\(key.stringValue)`", param: key.stringValue)
    } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        throw APIError.invalid("`\(path)` has the wrong type: \(context.debugDescription)", param: path)
    } catch let DecodingError.dataCorrupted(context) {
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        throw APIError.invalid(path.isEmpty ? "the body is not valid JSON" : "`\(path)`: \(context.debugDescription)",
                               param: path.isEmpty ? nil : path)
    }
}

func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONEncoder().encode(value)) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

extension APIError {
    var response: Response {
        Response(status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: json)))
    }
}

/// Every failure as an OpenAI JSON error with its status (Hummingbird's own 404s and 413s
/// included), and each answer counted in the metrics.
struct MetricsAndErrors<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response: Response
        do {
            response = try await next(request, context)
        } catch let e as APIError {
            response = e.response
        } catch let e as HTTPError {
            let message = e.body ?? (e.status == .notFound ? "no route \(request.method) \(request.uri.path)" : e.status.reasonPhrase)
            response = APIError(status: e.status.code, message).response
        } catch {
            response = APIError(status: 500, "\(error)").response
        }
        metrics.request(path: request.uri.path, status: response.status.code, duration: ContinuousClock.now - start)
        return response
    }
}

/// `Authorization: Bearer <key>` on every request, compared in constant time.
struct BearerKey<Context: RequestContext>: RouterMiddleware {
    let key: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let given = request.headers[.authorization] ?? ""
        guard given.hasPrefix("Bearer "), constantTimeEqual(Array(given.utf8.dropFirst(7)), Array(key.utf8)) else {
            throw APIError(status: 401, "a valid API key is needed: Authorization: Bearer <key>", code: "invalid_api_key")
        }
        return try await next(request, context)
    }
}

/// Equal bytes, in time that depends only on the lengths (a wrong key's prefix is not timed).
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var diff = UInt8(truncatingIfNeeded: a.count ^ b.count)
    for i in 0..<max(a.count, b.count) {
        diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
    }
    return diff == 0
}

/// Serves until SIGTERM or SIGINT; then Hummingbird stops accepting, lets the requests in flight
/// finish, and the scheduler drains.
public func runServer(service: CompletionService, options: ServerOptions, onRunning: @escaping @Sendable (Int) -> Void) async throws {
    let app = Application(
        router: makeRouter(service: service, apiKey: options.apiKey),
        configuration: .init(address: .hostname(options.host, port: options.port), serverName: "mambaquant"),
        onServerRunning: { channel in onRunning(channel.localAddress?.port ?? options.port) })
    try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    service.scheduler.drainAndStop()
}
