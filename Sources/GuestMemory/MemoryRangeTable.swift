/// One range of guest physical memory: where it starts and how long it is.
///
/// The JSON form matches Cloud Hypervisor's `MemoryRange` (vm-migration):
/// `{"gpa": 0, "length": 1073741824}`.
public struct MemoryRange: Codable, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The guest physical address of the first byte.
    public var gpa: UInt64
    /// The length in bytes.
    public var length: UInt64

    /// Creates a range of `length` bytes at `gpa`.
    public init(gpa: UInt64, length: UInt64) {
        self.gpa = gpa
        self.length = length
    }

    /// `[start, end)` in hexadecimal (the end computed wide, so it never overflows).
    public var description: String {
        "[0x\(String(gpa, radix: 16)), 0x\(String(UInt128(gpa) + UInt128(length), radix: 16)))"
    }
}

/// The guest memory ranges of a snapshot, in the order their bytes follow one another in the
/// memory file: range `i` starts in the file at the sum of the lengths before it.
///
/// The JSON form matches Cloud Hypervisor's `MemoryRangeTable`, which its memory manager
/// keeps in `state.json` beside the `memory-ranges` file: `{"data": [{"gpa": ..., "length": ...}]}`.
public struct MemoryRangeTable: Codable, Equatable, Hashable, Sendable {
    /// The ranges, in file order.
    public var data: [MemoryRange]

    /// Creates a table of `ranges` (in file order).
    public init(_ ranges: [MemoryRange] = []) {
        data = ranges
    }

    /// The ranges, in file order.
    public var ranges: [MemoryRange] { data }

    /// The sum of all lengths: the size the memory file must have. `nil` if it overflows.
    public var totalLength: UInt64? {
        var total: UInt64 = 0
        for range in data {
            let (sum, overflow) = total.addingReportingOverflow(range.length)
            if overflow { return nil }
            total = sum
        }
        return total
    }

    /// Where each range's bytes start in the memory file.
    public var fileOffsets: [UInt64] {
        var offsets: [UInt64] = []
        offsets.reserveCapacity(data.count)
        var offset: UInt64 = 0
        for range in data {
            offsets.append(offset)
            offset &+= range.length
        }
        return offsets
    }
}

extension GuestMemory {
    /// The table that describes this memory's regions, one range per region in address
    /// order: what `saveSnapshot(to:)` writes and `restoreSnapshot(from:table:)` expects.
    public var rangeTable: MemoryRangeTable {
        MemoryRangeTable(regions.map { MemoryRange(gpa: $0.start.rawValue, length: $0.size) })
    }

    /// Checks that `table` describes exactly this memory's regions (same ranges, same
    /// order), throwing `.snapshotMismatch` with the first difference found.
    public func checkMatches(_ table: MemoryRangeTable) throws(GuestMemoryError) {
        let expected = rangeTable.data
        for (index, (want, have)) in zip(expected, table.data).enumerated() where want != have {
            if want.gpa == have.gpa {
                throw .snapshotMismatch("range \(index) of the snapshot is \(have) (0x\(String(have.length, radix: 16)) bytes) "
                    + "but guest memory has \(want) (0x\(String(want.length, radix: 16)) bytes) there: a different length")
            }
            throw .snapshotMismatch("range \(index) of the snapshot is \(have) but the guest memory region there is \(want): "
                + "a different range")
        }
        if table.data.count < expected.count {
            let missing = expected[table.data.count...].map(\.description).joined(separator: ", ")
            throw .snapshotMismatch("the snapshot has \(table.data.count) memory range(s) but guest memory has "
                + "\(expected.count) region(s): missing \(missing)")
        }
        if table.data.count > expected.count {
            let extra = table.data[expected.count...].map(\.description).joined(separator: ", ")
            throw .snapshotMismatch("the snapshot has \(table.data.count) memory range(s) but guest memory has only "
                + "\(expected.count) region(s): extra \(extra)")
        }
    }
}
