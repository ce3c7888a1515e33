// Cloud Hypervisor's live-migration wire format (its `vm-migration` crate, protocol version 0):
// 16-byte requests and responses, little-endian, each followed by `length` bytes of payload.
import GuestMemory

/// Why a migration stopped: a peer that broke the protocol, a refused step, a socket error.
public struct MigrationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// One sentence.
    public var description: String

    /// An error with `description`.
    public init(_ description: String) { self.description = description }
}

/// A request's command (`Command`, a `u16`).
enum MigrationCommand: UInt16, Sendable, CaseIterable {
    case invalid = 0
    case start = 1
    case config = 2
    case state = 3
    case memory = 4
    /// Finishes and resumes the VM on the destination (the source VM was running).
    case complete = 5
    case abandon = 6
    case memoryFD = 7
    /// Finishes and leaves the VM paused (the source VM was paused).
    case completePaused = 8
    case pageFault = 9

    /// Cloud Hypervisor's name of the command, for messages.
    var name: String {
        switch self {
        case .invalid: "Invalid"
        case .start: "Start"
        case .config: "Config"
        case .state: "State"
        case .memory: "Memory"
        case .complete: "Complete"
        case .abandon: "Abandon"
        case .memoryFD: "MemoryFd"
        case .completePaused: "CompletePaused"
        case .pageFault: "PageFault"
        }
    }
}

/// One request: `command: u16`, six header bytes (for `Start`, the sender's protocol version
/// in the first two), `length: u64` of payload.
struct MigrationRequest: Equatable, Sendable {
    /// The encoded size.
    static let size = 16
    /// The newest protocol version spoken here (Cloud Hypervisor's `CURRENT_PROTOCOL_VERSION`).
    static let protocolVersion: UInt16 = 0

    var command: MigrationCommand
    var headers: [UInt8] = [0, 0, 0, 0, 0, 0]
    var length: UInt64

    init(_ command: MigrationCommand, length: UInt64 = 0) {
        self.command = command
        self.length = length
    }

    /// `Start` carrying this side's protocol version.
    static func start() -> MigrationRequest {
        var request = MigrationRequest(.start)
        request.headers[0] = UInt8(protocolVersion & 0xFF)
        request.headers[1] = UInt8(protocolVersion >> 8)
        return request
    }

    /// The sender's version from a `Start`, if this side speaks it (the current version and the
    /// one before, as Cloud Hypervisor accepts).
    func senderVersion() throws(MigrationError) -> UInt16 {
        let version = UInt16(headers[0]) | UInt16(headers[1]) << 8
        let oldest = Self.protocolVersion == 0 ? 0 : Self.protocolVersion - 1
        guard (oldest...Self.protocolVersion).contains(version) else {
            throw MigrationError("the sender speaks migration protocol version \(version); this VMM speaks \(oldest)...\(Self.protocolVersion)")
        }
        return version
    }

    var bytes: [UInt8] {
        var out = ByteWriter()
        out.u16(command.rawValue)
        out.append(headers)
        out.u64(length)
        return out.bytes
    }

    /// Decodes a request; an unknown command is refused by number.
    init(decoding bytes: [UInt8]) throws(MigrationError) {
        guard bytes.count == Self.size else { throw MigrationError("a request is \(Self.size) bytes, got \(bytes.count)") }
        let raw = UInt16(bytes[0]) | UInt16(bytes[1]) << 8
        guard let command = MigrationCommand(rawValue: raw) else { throw MigrationError("received a request with unknown command \(raw)") }
        self.command = command
        headers = Array(bytes[2..<8])
        length = ByteReader.u64(bytes, at: 8)
    }
}

/// A response's status (`Status`, a `u16`).
enum MigrationStatus: UInt16, Sendable {
    case invalid = 0
    case ok = 1
    case error = 2
}

/// One response: `status: u16`, six padding bytes, `length: u64` (always 0 in version 0).
struct MigrationResponse: Equatable, Sendable {
    static let size = 16
    var status: MigrationStatus
    var length: UInt64 = 0

    var bytes: [UInt8] {
        var out = ByteWriter()
        out.u16(status.rawValue)
        out.append([0, 0, 0, 0, 0, 0])
        out.u64(length)
        return out.bytes
    }

    init(_ status: MigrationStatus) { self.status = status }

    init(decoding bytes: [UInt8]) throws(MigrationError) {
        guard bytes.count == Self.size else { throw MigrationError("a response is \(Self.size) bytes, got \(bytes.count)") }
        let raw = UInt16(bytes[0]) | UInt16(bytes[1]) << 8
        guard let status = MigrationStatus(rawValue: raw) else { throw MigrationError("received a response with unknown status \(raw)") }
        self.status = status
        length = ByteReader.u64(bytes, at: 8)
    }
}

/// The binary form of a `MemoryRangeTable` in a `Memory` request: `(gpa: u64, length: u64)`
/// pairs, 16 bytes each.
enum MigrationRangeCodec {
    static let rangeSize = 16

    static func encode(_ table: MemoryRangeTable) -> [UInt8] {
        var out = ByteWriter()
        for range in table.ranges {
            out.u64(range.gpa)
            out.u64(range.length)
        }
        return out.bytes
    }

    /// Decodes `bytes` (a multiple of 16); every range must be non-empty and not wrap around.
    static func decode(_ bytes: [UInt8]) throws(MigrationError) -> MemoryRangeTable {
        guard bytes.count % rangeSize == 0 else {
            throw MigrationError("a memory range table of \(bytes.count) bytes is not a whole number of 16-byte ranges")
        }
        var ranges: [MemoryRange] = []
        ranges.reserveCapacity(bytes.count / rangeSize)
        for offset in stride(from: 0, to: bytes.count, by: rangeSize) {
            let range = MemoryRange(gpa: ByteReader.u64(bytes, at: offset), length: ByteReader.u64(bytes, at: offset + 8))
            guard range.length > 0, range.gpa <= UInt64.max - range.length else {
                throw MigrationError("memory range \(offset / rangeSize) \(range) is empty or wraps around")
            }
            ranges.append(range)
        }
        return MemoryRangeTable(ranges)
    }
}

/// Little-endian byte building.
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u16(_ value: UInt16) { bytes.append(UInt8(value & 0xFF)); bytes.append(UInt8(value >> 8)) }
    mutating func u32(_ value: UInt32) { for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) } }
    mutating func u64(_ value: UInt64) { for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) } }
    mutating func append(_ more: [UInt8]) { bytes.append(contentsOf: more) }
}

/// Little-endian byte reading (callers check bounds).
enum ByteReader {
    static func u64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<8 { value |= UInt64(bytes[offset + i]) << UInt64(8 * i) }
        return value
    }
    static func u32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for i in 0..<4 { value |= UInt32(bytes[offset + i]) << UInt32(8 * i) }
        return value
    }
}
