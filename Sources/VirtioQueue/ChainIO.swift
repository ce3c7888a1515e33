import GuestMemory

/// Reads a request sequentially across the device-readable buffers of a chain.
///
/// A read that asks for more bytes than remain fails before copying anything.
public struct ChainReader: Sendable {
    private let memory: GuestMemory
    private let buffers: [Descriptor]
    private var index = 0
    private var offset = 0
    /// The bytes consumed so far.
    public private(set) var bytesRead = 0
    /// The bytes still available to read.
    public private(set) var remaining: Int

    /// Starts reading at the first readable buffer of `chain`.
    public init(_ chain: DescriptorChain, memory: GuestMemory) {
        self.memory = memory
        self.buffers = Array(chain.readable)
        self.remaining = chain.readableLength
    }

    /// Copies the next `count` bytes out of guest memory.
    ///
    /// - Throws: `.readOverrun` when fewer than `count` bytes remain, `.memory` when the copy fails.
    public mutating func readBytes(count: Int) throws(QueueError) -> [UInt8] {
        guard count >= 0, count <= remaining else { throw .readOverrun(requested: count, remaining: remaining) }
        var result: [UInt8] = []
        result.reserveCapacity(count)
        while result.count < count {
            let chunk = try nextChunk(max: count - result.count)
            do {
                result += try memory.readBytes(count: chunk.length, at: chunk.address)
            } catch {
                throw .memory(error)
            }
            advance(by: chunk.length)
        }
        return result
    }

    /// Reads a little-endian integer.
    ///
    /// - Throws: `.readOverrun` when too few bytes remain, `.memory` when the copy fails.
    @_specialize(exported: true, where T == UInt8)
    @_specialize(exported: true, where T == UInt16)
    @_specialize(exported: true, where T == UInt32)
    @_specialize(exported: true, where T == UInt64)
    public mutating func read<T: FixedWidthInteger>(_ type: T.Type = T.self) throws(QueueError) -> T {
        let size = MemoryLayout<T>.size
        // Fast path: the value lies in the current buffer, read it in place.
        if index < buffers.count, Int(buffers[index].length) - offset >= size, remaining >= size {
            let address = GuestAddress(buffers[index].address.rawValue + UInt64(offset))
            let value: T
            do { value = try memory.read(T.self, at: address) } catch { throw .memory(error) }
            advance(by: size)
            return value
        }
        let bytes = try readBytes(count: size)
        var value: T = 0
        for (shift, byte) in bytes.enumerated() { value |= T(truncatingIfNeeded: byte) << (shift * 8) }
        return value
    }

    /// Skips `count` bytes without copying them.
    ///
    /// - Throws: `.readOverrun` when fewer than `count` bytes remain.
    public mutating func skip(_ count: Int) throws(QueueError) {
        guard count >= 0, count <= remaining else { throw .readOverrun(requested: count, remaining: remaining) }
        var left = count
        while left > 0 {
            let chunk = try nextChunk(max: left)
            advance(by: chunk.length)
            left -= chunk.length
        }
    }

    /// The guest range of up to `max` bytes at the current position (skips empty buffers).
    private mutating func nextChunk(max: Int) throws(QueueError) -> (address: GuestAddress, length: Int) {
        while index < buffers.count, offset == Int(buffers[index].length) {
            index += 1
            offset = 0
        }
        guard index < buffers.count else { throw .readOverrun(requested: max, remaining: 0) }
        let buffer = buffers[index]
        // The chain was validated, so address + length does not overflow.
        return (GuestAddress(buffer.address.rawValue + UInt64(offset)), min(max, Int(buffer.length) - offset))
    }

    private mutating func advance(by count: Int) {
        offset += count
        bytesRead += count
        remaining -= count
    }
}

/// Writes a response sequentially across the device-writable buffers of a chain.
///
/// A write larger than the remaining room fails before writing anything; `bytesWritten`
/// is the length to report in the used ring.
public struct ChainWriter: Sendable {
    private let memory: GuestMemory
    private let buffers: [Descriptor]
    private var index = 0
    private var offset = 0
    /// The bytes written so far.
    public private(set) var bytesWritten = 0
    /// The room left in the writable buffers.
    public private(set) var remaining: Int

    /// Starts writing at the first writable buffer of `chain`.
    public init(_ chain: DescriptorChain, memory: GuestMemory) {
        self.memory = memory
        self.buffers = Array(chain.writable)
        self.remaining = chain.writableLength
    }

    /// Writes `bytes` at the current position.
    ///
    /// - Throws: `.writeOverrun` when they do not fit, `.memory` when the copy fails.
    public mutating func write(bytes: some Collection<UInt8>) throws(QueueError) {
        let bytes = Array(bytes)
        guard bytes.count <= remaining else { throw .writeOverrun(requested: bytes.count, remaining: remaining) }
        var done = 0
        while done < bytes.count {
            while index < buffers.count, offset == Int(buffers[index].length) {
                index += 1
                offset = 0
            }
            guard index < buffers.count else { throw .writeOverrun(requested: bytes.count - done, remaining: 0) }
            let buffer = buffers[index]
            let length = min(bytes.count - done, Int(buffer.length) - offset)
            do {
                try memory.write(bytes: bytes[done..<(done + length)],
                                 at: GuestAddress(buffer.address.rawValue + UInt64(offset)))
            } catch {
                throw .memory(error)
            }
            offset += length
            done += length
            bytesWritten += length
            remaining -= length
        }
    }

    /// Writes a little-endian integer.
    ///
    /// - Throws: `.writeOverrun` when it does not fit, `.memory` when the copy fails.
    public mutating func write<T: FixedWidthInteger>(_ value: T) throws(QueueError) {
        try write(bytes: (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) })
    }
}
