import Foundation
import MambaModel
import MambaQuantization
import MambaTensors

// `bench --blas-cores`: OpenBLAS reads its core once, at load, so each candidate core is measured
// in a child process (this executable, `bench ... --float-only`); the comparison then runs under
// the fastest, re-executing once with OPENBLAS_CORETYPE when that is not the core already running.

/// Float32 speed under one OpenBLAS core.
struct CoreMeasurement: Codable {
    let requested: String
    /// The core OpenBLAS reports (a core the library lacks for this CPU maps to another).
    let core: String
    let prefillTokensPerSecond: Double
    let sgemmGflops: [String: Double]

    enum CodingKeys: String, CodingKey {
        case requested, core
        case prefillTokensPerSecond = "prefill_tokens_per_second", sgemmGflops = "sgemm_gflops"
    }
}

enum BLASCoreSurvey {
    /// Where the survey travels to the re-executed process.
    static let environmentKey = "MAMBAQUANT_BLAS_CORE_SURVEY"

    /// The child's side: float32 prefill and sgemm at the given shapes under the running core.
    static func measure(_ model: MambaLM, shapes: [(String, Int, Int)], tokens: Int, runs: Int, parallelism: Parallelism) throws -> CoreMeasurement {
        let t = try measureThroughput(model, tokens: tokens, decodeSteps: 1, runs: runs, parallelism: parallelism)
        var sgemm: [String: Double] = [:]
        for (name, n, k) in shapes { sgemm[name] = benchmarkSgemm(m: tokens, n: n, k: k, runs: runs, parallelism: parallelism) }
        return CoreMeasurement(requested: ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? BLASCore.current,
                               core: BLASCore.current, prefillTokensPerSecond: t.prefillTokensPerSecond, sgemmGflops: sgemm)
    }

    /// The survey handed down by a re-exec, if this process is one.
    static func inherited() -> [CoreMeasurement]? {
        guard let text = ProcessInfo.processInfo.environment[environmentKey] else { return nil }
        return try? JSONDecoder().decode([CoreMeasurement].self, from: Data(text.utf8))
    }

    /// Runs `arguments` + --float-only --json under each candidate core and collects the results.
    static func run(arguments: [String]) throws -> [CoreMeasurement] {
        try BLASCore.candidates().map { core in
            printError("measuring float32 under OpenBLAS core \(core)")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
            process.arguments = arguments + ["--float-only", "--json"]
            var environment = ProcessInfo.processInfo.environment
            environment["OPENBLAS_CORETYPE"] = core
            environment[environmentKey] = nil
            process.environment = environment
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0, let m = try? JSONDecoder().decode(CoreMeasurement.self, from: data) else {
                throw MambaError(.badInput, "bench --blas-cores: the float32 measurement under OpenBLAS core \(core) failed (exit \(process.terminationStatus))")
            }
            return m
        }
    }

    /// Re-executes with the fastest core when it is not the running one (the survey goes along in
    /// the environment); returns when no re-exec is needed.
    static func useFastest(_ survey: [CoreMeasurement]) throws {
        guard let best = survey.max(by: { $0.prefillTokensPerSecond < $1.prefillTokensPerSecond }),
              best.core.lowercased() != BLASCore.current.lowercased() else { return }
        printError("re-running under OpenBLAS core \(best.core), the fastest at float32 prefill here")
        let error = BLASCore.reexec(setting: ["OPENBLAS_CORETYPE": best.requested,
                                              environmentKey: String(decoding: try JSONEncoder().encode(survey), as: UTF8.self)])
        throw MambaError(.badInput, "bench --blas-cores: could not re-execute under OpenBLAS core \(best.core): \(String(cString: strerror(error)))")
    }

    static func table(_ survey: [CoreMeasurement], running: String) -> String {
        let shapes = survey.first.map { $0.sgemmGflops.keys.sorted() } ?? []
        var s = "| OpenBLAS core | float32 prefill tok/s | " + shapes.map { "sgemm \($0) GFLOP/s" }.joined(separator: " | ") + " |\n"
        s += "|---|---:|" + String(repeating: "---:|", count: shapes.count) + "\n"
        for m in survey {
            let name = m.core + (m.requested.lowercased() != m.core.lowercased() ? " (asked \(m.requested))" : "")
                + (m.core.lowercased() == running.lowercased() ? " (used)" : "")
            s += "| \(name) | " + String(format: "%.1f", m.prefillTokensPerSecond) + " | "
                + shapes.map { String(format: "%.1f", m.sgemmGflops[$0] ?? 0) }.joined(separator: " | ") + " |\n"
        }
        return s
    }
}
