import Testing
import VMAllocator
import TestSupport


/// Runs `body` and captures its typed error, so a test can compare outcomes with a model.
private func outcome<T>(_ body: () throws(AllocatorError) -> T) -> Result<T, AllocatorError> {
    do { return .success(try body()) } catch { return .failure(error) }
}

/// A byte-per-byte reference model of a small pool: slow, obviously correct.
private struct ByteMapModel {
    let base: UInt64
    private(set) var used: [Bool]
    private(set) var ranges: [AddressRange] = []

    init(base: UInt64, size: Int) {
        self.base = base
        used = Array(repeating: false, count: size)
    }

    var last: UInt64 { base + UInt64(used.count) - 1 }
    var freeBytes: UInt64 { UInt64(used.count(where: { !$0 })) }

    func isFree(_ start: UInt64, _ size: UInt64) -> Bool {
        (start..<start + size).allSatisfy { !used[Int($0 - base)] }
    }

    func fit(size: UInt64, alignment: UInt64, policy: AllocationPolicy) -> UInt64? {
        guard size <= UInt64(used.count) else { return nil }
        switch policy {
        case .firstFit:
            var candidate = (base + alignment - 1) / alignment * alignment
            while candidate + size - 1 <= last {
                if isFree(candidate, size) { return candidate }
                candidate += alignment
            }
        case .lastFit:
            var candidate = (last - size + 1) / alignment * alignment
            while candidate >= base {
                if isFree(candidate, size) { return candidate }
                guard candidate >= alignment else { break }
                candidate -= alignment
            }
        }
        return nil
    }

    mutating func take(_ range: AddressRange) {
        for address in range.start...range.end { used[Int(address - base)] = true }
        ranges.append(range)
        ranges.sort()
    }

    mutating func release(_ range: AddressRange) {
        for address in range.start...range.end { used[Int(address - base)] = false }
        ranges.removeAll { $0 == range }
    }
}

@Suite("Randomized allocate/free sequences")
struct RandomizedTests {
    @Test("a small pool matches a byte-map model exactly, operation by operation")
    func matchesByteMapModel() throws {
        var random = SplitMix64(seed: 0x5eed_0000_0000_0001)
        let base: UInt64 = 0x130
        var allocator = try AddressAllocator(name: "model", base: base, size: 0x200)
        var model = ByteMapModel(base: base, size: 0x200)

        for step in 0..<4000 {
            let roll = random.next() % 20
            if roll < 10 {
                let size = UInt64.random(in: 1...48, using: &random)
                let alignment = UInt64(1) << UInt64.random(in: 0...7, using: &random)
                let policy: AllocationPolicy = Bool.random(using: &random) ? .firstFit : .lastFit
                let expected = model.fit(size: size, alignment: alignment, policy: policy)
                switch outcome({ () throws(AllocatorError) in
                    try allocator.allocate(size: size, alignment: alignment, policy: policy)
                }) {
                case .success(let range):
                    try #require(range.start == expected, "step \(step): \(policy) \(size)/\(alignment)")
                    model.take(range)
                case .failure(let error):
                    try #require(expected == nil, "step \(step): \(error)")
                    try #require(error == .exhausted(size: size, alignment: alignment, pool: "model", poolRange: allocator.pool))
                }
            } else if roll < 13 {
                let start = UInt64.random(in: (base - 0x20)...(model.last + 0x20), using: &random)
                let size = UInt64.random(in: 1...32, using: &random)
                let requested = try AddressRange(start: start, size: size)
                let result = outcome({ () throws(AllocatorError) in try allocator.allocate(at: start, size: size) })
                if start < base || requested.end > model.last {
                    try #require(result == .failure(.outOfPool(requested: requested, pool: allocator.pool, poolName: "model")))
                } else if let existing = model.ranges.first(where: { $0.overlaps(requested) }) {
                    try #require(result == .failure(.overlap(requested: requested, existing: existing, pool: "model")))
                } else {
                    try #require(result == .success(requested), "step \(step)")
                    model.take(requested)
                }
            } else if roll < 18, let victim = model.ranges.randomElement(using: &random) {
                if Bool.random(using: &random) {
                    try allocator.free(victim)
                } else {
                    try allocator.free(at: victim.start)
                }
                model.release(victim)
            } else {
                let start = UInt64.random(in: base...model.last, using: &random)
                let result = outcome({ () throws(AllocatorError) in try allocator.free(at: start); return start })
                if let match = model.ranges.first(where: { $0.start == start }) {
                    try #require(result == .success(start))
                    model.release(match)
                } else {
                    try #require(result == .failure(.notAllocated(start, pool: "model")))
                }
            }
            try #require(allocator.allocations == model.ranges, "step \(step)")
            try #require(allocator.freeBytes == model.freeBytes, "step \(step)")
        }
    }

    @Test("a pool ending at UInt64.max stays consistent under thousands of operations")
    func invariantsAtTopOfAddressSpace() throws {
        var random = SplitMix64(seed: 0xc10d_4b7e_0000_0042)
        let poolSize: UInt64 = 1 << 40
        var allocator = try AddressAllocator(name: "high MMIO", base: 0 &- poolSize, size: poolSize)
        var alignmentOf: [UInt64: UInt64] = [:]
        var exhaustedCount = 0

        for step in 0..<2000 {
            let roll = random.next() % 20
            let freeBefore = allocator.freeRanges
            if roll < 11 {
                let size = UInt64.random(in: 1...(UInt64(1) << UInt64.random(in: 0...36, using: &random)), using: &random)
                let alignment = UInt64(1) << UInt64.random(in: 0...48, using: &random)
                let policy: AllocationPolicy = Bool.random(using: &random) ? .firstFit : .lastFit
                let expected = Self.bestFit(in: freeBefore, size: size, alignment: alignment, policy: policy)
                switch outcome({ () throws(AllocatorError) in
                    try allocator.allocate(size: size, alignment: alignment, policy: policy)
                }) {
                case .success(let range):
                    try #require(range.start == expected && range.size == size, "step \(step)")
                    alignmentOf[range.start] = alignment
                case .failure(let error):
                    try #require(expected == nil, "step \(step): \(error)")
                    exhaustedCount += 1
                }
            } else if roll < 14 {
                let start = allocator.pool.start + UInt64.random(in: 0...(poolSize - 1), using: &random)
                let size = UInt64.random(in: 1...(UInt64(1) << 30), using: &random)
                if case .success(let range) = outcome({ () throws(AllocatorError) in try allocator.allocate(at: start, size: size) }) {
                    try #require(freeBefore.contains { $0.contains(range) }, "step \(step)")
                    alignmentOf[range.start] = 1
                }
            } else if let victim = allocator.allocations.randomElement(using: &random) {
                try allocator.free(victim)
                alignmentOf[victim.start] = nil
            }
            try Self.checkInvariants(allocator, alignmentOf: alignmentOf, step: step)
        }
        #expect(exhaustedCount > 0)
        #expect(allocator.allocations.count > 10)
    }

    /// The start an ideal first-fit or last-fit search would pick among `free`, computed
    /// in 128-bit arithmetic so it shares no overflow reasoning with the allocator.
    private static func bestFit(
        in free: [AddressRange], size: UInt64, alignment: UInt64, policy: AllocationPolicy
    ) -> UInt64? {
        let size = UInt128(size)
        let alignment = UInt128(alignment)
        let candidates = free.compactMap { range -> UInt64? in
            let first = UInt128(range.start)
            let last = UInt128(range.end)
            switch policy {
            case .firstFit:
                let start = (first + alignment - 1) / alignment * alignment
                return start + size - 1 <= last ? UInt64(start) : nil
            case .lastFit:
                guard last + 1 >= first + size else { return nil }
                let start = (last + 1 - size) / alignment * alignment
                return start >= first ? UInt64(start) : nil
            }
        }
        return policy == .firstFit ? candidates.min() : candidates.max()
    }

    private static func checkInvariants(
        _ allocator: AddressAllocator, alignmentOf: [UInt64: UInt64], step: Int
    ) throws {
        let allocations = allocator.allocations
        try #require(allocations.count == alignmentOf.count, "step \(step)")
        var used: UInt128 = 0
        for (index, range) in allocations.enumerated() {
            try #require(allocator.pool.contains(range), "step \(step): \(range) outside the pool")
            let alignment = try #require(alignmentOf[range.start], "step \(step): unknown \(range)")
            try #require(range.start % alignment == 0, "step \(step): \(range) not aligned to \(alignment)")
            if index > 0 {
                try #require(allocations[index - 1].end < range.start, "step \(step): overlap at \(range)")
            }
            used += UInt128(range.size)
        }
        try #require(UInt128(allocator.freeBytes) + used == UInt128(allocator.pool.size), "step \(step)")
        // Allocations and free ranges tile the pool exactly.
        let tiles = (allocations + allocator.freeRanges).sorted()
        var next = UInt128(allocator.pool.start)
        for tile in tiles {
            try #require(UInt128(tile.start) == next, "step \(step): gap or overlap at \(tile)")
            next = UInt128(tile.end) + 1
        }
        try #require(next == UInt128(allocator.pool.end) + 1, "step \(step)")
    }
}
