import CMambaKernels
import Foundation
import MambaTensors

/// The selective scan of Mamba-1, one path for prefill and decode (a decode step is L = 1 with the
/// state carried in). h stays float32 throughout (docs/DESIGN.md section 2).
public struct SelectiveScan: Sendable {
    public let a: Tensor           // [E, N] = -exp(A_log)
    public let dSkip: Tensor       // [E]

    public init(aLog: Tensor, dSkip: Tensor) {
        a = Tensor(shape: aLog.shape, storage: aLog.storage.map { -Foundation.exp($0) })
        self.dSkip = dSkip
    }

    public var channels: Int { a.rows }
    public var stateSize: Int { a.cols }

    /// x, dtRaw [L, E]; b, c [L, N]; h [E, N] updated. Returns y [L, E]. Channels are independent,
    /// so the channel range is split between threads.
    public func forward(x: Tensor, dtRaw: Tensor, b: Tensor, c: Tensor, h: inout [Float], _ parallelism: Parallelism) -> Tensor {
        let (l, e, n) = (x.rows, channels, stateSize)
        precondition(x.cols == e && dtRaw.cols == e && b.cols == n && c.cols == n && h.count == e * n)
        var y = Tensor(zeros: [l, e])
        x.storage.withUnsafeBufferPointer { xp in
        dtRaw.storage.withUnsafeBufferPointer { dp in
        b.storage.withUnsafeBufferPointer { bp in
        c.storage.withUnsafeBufferPointer { cp in
        a.storage.withUnsafeBufferPointer { ap in
        dSkip.storage.withUnsafeBufferPointer { sp in
        h.withUnsafeMutableBufferPointer { hp in
        y.storage.withUnsafeMutableBufferPointer { yp in
            let args = mq_scan_args(
                length: Int32(l), channels: Int32(e), state: Int32(n), channel_begin: 0, channel_end: Int32(e),
                x: xp.baseAddress, dt_raw: dp.baseAddress, B: bp.baseAddress, C: cp.baseAddress,
                ldb: Int32(n), ldc: Int32(n), A: ap.baseAddress, D: sp.baseAddress, h: hp.baseAddress, y: yp.baseAddress)
            // Small work is not worth a thread hand-off. A decode step (l * n small) splits its channels
            // only where each part has the budget's minimum work (about 4 operations per state
            // update): with spinning workers, a mamba-130m step's 1,536 channels go in two parts
            // (on one thread it was about 0.6 ms of a 7 ms token at 2 threads on a Zen 3).
            let minimumChunk = l * n >= 64 ? 64 : max(64, parallelism.minimumWorkPerThread / (4 * l * n))
            parallelism.forEachChunk(e, minimumChunk: minimumChunk) { range in
                var part = args
                part.channel_begin = Int32(range.lowerBound)
                part.channel_end = Int32(range.upperBound)
                mq_selective_scan_f32(&part)
            }
        }}}}}}}}
        return y
    }

    /// The plain scan, line for line with selective_scan_ref (state-spaces/mamba), in Double for
    /// the exp and softplus: the reference the fast kernel is tested against.
    public func reference(x: Tensor, dtRaw: Tensor, b: Tensor, c: Tensor, h: inout [Float]) -> Tensor {
        let (l, e, n) = (x.rows, channels, stateSize)
        var y = Tensor(zeros: [l, e])
        for t in 0..<l {
            for ch in 0..<e {
                let raw = Double(dtRaw.storage[t * e + ch])
                let dt = raw > 20 ? raw : Foundation.log1p(Foundation.exp(raw))
                let xv = Double(x.storage[t * e + ch])
                var acc = 0.0
                for s in 0..<n {
                    let decay = Foundation.exp(dt * Double(a.storage[ch * n + s]))
                    let hv = decay * Double(h[ch * n + s]) + dt * Double(b.storage[t * n + s]) * xv
                    h[ch * n + s] = Float(hv)
                    acc += hv * Double(c.storage[t * n + s])
                }
                y.storage[t * e + ch] = Float(acc + Double(dSkip.storage[ch]) * xv)
            }
        }
        return y
    }
}
