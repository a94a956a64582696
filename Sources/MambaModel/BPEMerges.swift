import MambaTensors

/// A BPE model's merges: (left id, right id) -> (rank, merged id), applied to a word's symbols by
/// rank, lowest first, the leftmost pair first among equal ranks (tokenizers' BPE::merge_word, a
/// priority queue over the symbols' linked list), so a long word (a SentencePiece-style tokenizer
/// sees a whole line as one word) costs O(n log n).
struct BPEMerges: Sendable {
    private let table: [UInt64: (rank: Int, id: Int)]

    init(_ entries: [Any], idOf: [String: Int], fail: (String) -> MambaError) throws {
        var table: [UInt64: (rank: Int, id: Int)] = [:]
        for (rank, entry) in entries.enumerated() {
            let pair: [String]
            if let s = entry as? String {
                pair = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            } else {
                pair = entry as? [String] ?? []
            }
            guard pair.count == 2, let a = idOf[pair[0]], let b = idOf[pair[1]], let m = idOf[pair[0] + pair[1]] else {
                throw fail("merge \(rank) (\(entry)) does not name two vocabulary tokens and their union")
            }
            let key = Self.key(a, b)
            if table[key] == nil { table[key] = (rank, m) }
        }
        self.table = table
    }

    var isEmpty: Bool { table.isEmpty }

    private static func key(_ a: Int, _ b: Int) -> UInt64 { UInt64(UInt32(truncatingIfNeeded: a)) << 32 | UInt64(UInt32(truncatingIfNeeded: b)) }

    /// The symbols merged until no adjacent pair has a merge.
    func merge(_ symbols: [Int]) -> [Int] {
        let n = symbols.count
        guard n > 1, !table.isEmpty else { return symbols }
        var ids = symbols
        var next = Array(1...n), prev = Array(-1..<(n - 1))   // n: none after; -1: none before
        var alive = [Bool](repeating: true, count: n)
        // Candidates (rank, left position, the pair's ids when queued): stale ones are skipped.
        var heap = MinHeap<(rank: Int, pos: Int, left: Int, right: Int)> { ($0.rank, $0.pos) < ($1.rank, $1.pos) }
        func push(_ i: Int) {
            let j = next[i]
            guard j < n, let m = table[Self.key(ids[i], ids[j])] else { return }
            heap.push((m.rank, i, ids[i], ids[j]))
        }
        for i in 0..<(n - 1) { push(i) }
        while let top = heap.pop() {
            let i = top.pos
            guard alive[i], next[i] < n, ids[i] == top.left, ids[next[i]] == top.right,
                  let m = table[Self.key(ids[i], ids[next[i]])], m.rank == top.rank else { continue }
            let j = next[i]
            ids[i] = m.id
            alive[j] = false
            next[i] = next[j]
            if next[j] < n { prev[next[j]] = i }
            if prev[i] >= 0 { push(prev[i]) }
            push(i)
        }
        var out: [Int] = []
        var i = 0
        while i < n { out.append(ids[i]); i = next[i] }
        return out
    }
}

/// A binary min-heap under `less`.
struct MinHeap<Element> {
    private var items: [Element] = []
    private let less: (Element, Element) -> Bool

    init(less: @escaping (Element, Element) -> Bool) { self.less = less }

    mutating func push(_ e: Element) {
        items.append(e)
        var c = items.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            guard less(items[c], items[p]) else { break }
            items.swapAt(c, p)
            c = p
        }
    }

    mutating func pop() -> Element? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var p = 0
            while true {
                let (l, r) = (2 * p + 1, 2 * p + 2)
                var m = p
                if l < items.count && less(items[l], items[m]) { m = l }
                if r < items.count && less(items[r], items[m]) { m = r }
                if m == p { break }
                items.swapAt(p, m)
                p = m
            }
        }
        return top
    }
}
