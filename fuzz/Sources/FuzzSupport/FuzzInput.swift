/// A cursor over libFuzzer's input bytes that hands out integers, flags and byte runs.
///
/// Once the bytes run out every read returns zero (or an empty run), so a target can keep
/// decoding without checking lengths; `isExhausted` tells it when to stop its loop.
/// Integers are little-endian, so seed writers can build inputs with ``FuzzInputBuilder``.
public struct FuzzInput {
    private let bytes: [UInt8]
    private var position = 0

    /// Wraps a copy of the `size` bytes at `data` (libFuzzer's buffer is only lent to us).
    public init(_ data: UnsafePointer<UInt8>, _ size: Int) {
        bytes = Array(UnsafeBufferPointer(start: data, count: size))
    }

    /// Wraps `bytes`.
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Whether every byte has been consumed.
    public var isExhausted: Bool { position >= bytes.count }

    /// How many bytes are left.
    public var remainingCount: Int { max(0, bytes.count - position) }

    /// The next byte, or 0 past the end.
    public mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    /// The next `T.bitWidth / 8` bytes as a little-endian integer (missing bytes read as 0).
    public mutating func integer<T: FixedWidthInteger>(_ type: T.Type = T.self) -> T {
        var value: T = 0
        for index in 0..<(T.bitWidth / 8) { value |= T(truncatingIfNeeded: byte()) << (index * 8) }
        return value
    }

    /// A flag from the low bit of the next byte.
    public mutating func bool() -> Bool { byte() & 1 == 1 }

    /// A value in `range` (one byte for ranges up to 256 values, two bytes otherwise).
    public mutating func int(in range: ClosedRange<Int>) -> Int {
        let width = UInt64(range.upperBound - range.lowerBound) + 1
        let raw: UInt64 = width <= 256 ? UInt64(byte()) : UInt64(integer(UInt16.self))
        return range.lowerBound + Int(raw % width)
    }

    /// One of `choices` (which must not be empty).
    public mutating func pick<T>(_ choices: [T]) -> T { choices[int(in: 0...(choices.count - 1))] }

    /// Up to `count` next bytes (fewer near the end).
    public mutating func bytes(count: Int) -> [UInt8] {
        let end = min(bytes.count, position + max(0, count))
        defer { position = max(position, end) }
        return position < end ? Array(bytes[position..<end]) : []
    }

    /// A run whose length (0...`maxCount`) is the next byte or two, then that many bytes.
    public mutating func run(maxCount: Int) -> [UInt8] { bytes(count: int(in: 0...maxCount)) }

    /// Everything not consumed yet.
    public mutating func rest() -> [UInt8] { bytes(count: remainingCount) }
}

/// Builds inputs in the encoding ``FuzzInput`` decodes, for seed corpora.
public struct FuzzInputBuilder {
    /// The bytes so far.
    public private(set) var bytes: [UInt8] = []

    /// Starts an empty input.
    public init() {}

    /// Appends one byte.
    public mutating func byte(_ value: UInt8) { bytes.append(value) }

    /// Appends `value` little-endian, as ``FuzzInput/integer(_:)`` reads it.
    public mutating func integer<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<(T.bitWidth / 8) { bytes.append(UInt8(truncatingIfNeeded: value >> (index * 8))) }
    }

    /// Appends raw bytes.
    public mutating func append(_ run: some Sequence<UInt8>) { bytes += run }

    /// Appends a run as ``FuzzInput/run(maxCount:)`` reads it (its length first).
    public mutating func run(_ run: [UInt8], maxCount: Int) {
        precondition(run.count <= maxCount, "a run of \(run.count) bytes does not fit maxCount \(maxCount)")
        if maxCount < 256 { byte(UInt8(run.count)) } else { integer(UInt16(run.count)) }
        append(run)
    }
}
