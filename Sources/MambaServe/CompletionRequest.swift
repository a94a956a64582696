import Foundation

/// The body of `POST /v1/completions`, as OpenAI's legacy completions API defines it (the API
/// lm-evaluation-harness's `local-completions` speaks). Unknown fields are ignored, as OpenAI does.
public struct CompletionRequest: Decodable, Sendable {
    public var model: String?
    public var prompt: PromptInput
    public var maxTokens: Int?
    public var temperature: Double?
    public var topP: Double?
    public var topK: Int?
    public var seed: UInt64?
    public var stop: [String]?
    public var n: Int?
    public var echo: Bool?
    public var logprobs: Int?
    public var stream: Bool?
    /// `stream_options.include_usage`: a last chunk with the usage and no choices, as OpenAI sends it.
    public var streamUsage = false

    enum CodingKeys: String, CodingKey {
        case model, prompt, temperature, seed, stop, n, echo, logprobs, stream
        case maxTokens = "max_tokens", topP = "top_p", topK = "top_k", streamOptions = "stream_options"
    }

    struct StreamOptions: Decodable { let include_usage: Bool? }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decodeIfPresent(String.self, forKey: .model)
        prompt = try c.decode(PromptInput.self, forKey: .prompt)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature)
        topP = try c.decodeIfPresent(Double.self, forKey: .topP)
        topK = try c.decodeIfPresent(Int.self, forKey: .topK)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
        // `stop` is a string or a list of strings.
        if let one = try? c.decodeIfPresent(String.self, forKey: .stop) {
            stop = [one]
        } else {
            stop = try c.decodeIfPresent([String].self, forKey: .stop)
        }
        n = try c.decodeIfPresent(Int.self, forKey: .n)
        echo = try c.decodeIfPresent(Bool.self, forKey: .echo)
        logprobs = try c.decodeIfPresent(Int.self, forKey: .logprobs)
        stream = try c.decodeIfPresent(Bool.self, forKey: .stream)
        streamUsage = try c.decodeIfPresent(StreamOptions.self, forKey: .streamOptions)?.include_usage ?? false
    }
}

/// A prompt: a string, a list of strings, a list of token ids, or a list of such lists. Each string
/// or id list is one choice of the response.
public enum PromptInput: Decodable, Sendable, Equatable {
    case texts([String])
    case tokens([[Int]])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) { self = .texts([s]); return }
        if let ids = try? c.decode([Int].self) { self = .tokens([ids]); return }
        if let list = try? c.decode([String].self) { self = .texts(list); return }
        if let lists = try? c.decode([[Int]].self) { self = .tokens(lists); return }
        throw DecodingError.dataCorruptedError(
            in: c, debugDescription: "prompt must be a string, a list of strings, a list of token ids or a list of token id lists")
    }

    public var count: Int {
        switch self {
        case .texts(let t): t.count
        case .tokens(let t): t.count
        }
    }
}

/// The response body (and, with `object` "text_completion" and one choice each, a streamed chunk).
public struct CompletionResponse: Encodable, Sendable {
    public var id: String
    public var object = "text_completion"
    public var created: Int
    public var model: String
    public var choices: [CompletionChoice]
    public var usage: Usage?

    public struct Usage: Encodable, Sendable {
        public var promptTokens: Int
        public var completionTokens: Int
        public var totalTokens: Int { promptTokens + completionTokens }
        enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens" }
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(promptTokens, forKey: .promptTokens)
            try c.encode(completionTokens, forKey: .completionTokens)
            try c.encode(totalTokens, forKey: .totalTokens)
        }
    }
}

public struct CompletionChoice: Encodable, Sendable {
    public var text: String
    public var index: Int
    public var logprobs: Logprobs?
    /// "stop" (a stop string or the end-of-text token), "length" (max_tokens), nil while streaming.
    public var finishReason: String?

    enum CodingKeys: String, CodingKey { case text, index, logprobs, finishReason = "finish_reason" }

    // OpenAI writes absent logprobs and finish reasons as null, not as a missing key.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(text, forKey: .text)
        try c.encode(index, forKey: .index)
        try c.encode(logprobs, forKey: .logprobs)
        try c.encode(finishReason, forKey: .finishReason)
    }
}

/// OpenAI's completions logprobs: per token its text, its log-probability (null for the first
/// prompt token, which nothing predicts), the most likely alternatives, and its offset in `text`.
public struct Logprobs: Encodable, Sendable {
    public var tokens: [String] = []
    public var tokenLogprobs: [Double?] = []
    public var topLogprobs: [[String: Double]?] = []
    public var textOffset: [Int] = []

    enum CodingKeys: String, CodingKey {
        case tokens, tokenLogprobs = "token_logprobs", topLogprobs = "top_logprobs", textOffset = "text_offset"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(tokens, forKey: .tokens)
        var lp = c.nestedUnkeyedContainer(forKey: .tokenLogprobs)
        for v in tokenLogprobs { if let v { try lp.encode(v) } else { try lp.encodeNil() } }
        var top = c.nestedUnkeyedContainer(forKey: .topLogprobs)
        for v in topLogprobs { if let v { try top.encode(v) } else { try top.encodeNil() } }
        try c.encode(textOffset, forKey: .textOffset)
    }
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
public struct APIError: Error, Sendable, Equatable {
    public var status: Int
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?

    public init(status: Int, _ message: String, type: String? = nil, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? (status == 401 ? "authentication_error" : status == 404 ? "not_found_error"
            : status == 429 || status == 503 ? "server_overloaded" : status >= 500 ? "server_error" : "invalid_request_error")
        self.param = param
        self.code = code
    }

    public static func invalid(_ message: String, param: String? = nil) -> APIError {
        APIError(status: 400, message, param: param)
    }

    public var json: Data {
        struct Body: Encodable {
            struct Inner: Encodable {
                let message: String, type: String, param: String?, code: String?
                func encode(to encoder: any Encoder) throws {
                    var c = encoder.container(keyedBy: CodingKeys.self)
                    try c.encode(message, forKey: .message)
                    try c.encode(type, forKey: .type)
                    try c.encode(param, forKey: .param)
                    try c.encode(code, forKey: .code)
                }
                enum CodingKeys: String, CodingKey { case message, type, param, code }
            }
            let error: Inner
        }
        return (try? JSONEncoder().encode(Body(error: .init(message: message, type: type, param: param, code: code)))) ?? Data()
    }
}
