import Synchronization

/// A disk held in memory: for tests, fuzzing and embedders that want a scratch disk.
public final class MemoryBlockBackend: BlockBackend {
    private let storage: Mutex<[UInt8]>
    /// The disk size in bytes.
    public let size: UInt64
    /// Whether writes are refused.
    public let isReadOnly: Bool
    /// Discard zeroes the range.
    public var supportsDiscard: Bool { true }
    /// Any alignment will do.
    public var preferredAlignment: Int { 1 }
    /// How many times ``flush()`` was called (tests check flush ordering with it).
    public var flushCount: Int { flushes.withLock { $0 } }
    private let flushes = Mutex(0)

    /// A zero-filled disk of `size` bytes.
    public init(size: Int, readOnly: Bool = false) {
        storage = Mutex([UInt8](repeating: 0, count: size))
        self.size = UInt64(size)
        isReadOnly = readOnly
    }

    /// A disk holding `contents`.
    public init(contents: [UInt8], readOnly: Bool = false) {
        storage = Mutex(contents)
        size = UInt64(contents.count)
        isReadOnly = readOnly
    }

    /// A copy of the whole disk.
    public var contents: [UInt8] { storage.withLock { $0 } }

    /// Copies bytes out of the array.
    public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) {
        try checkRange(offset: offset, length: UInt64(totalLength(buffers)))
        storage.withLock { bytes in
            var position = Int(offset)
            for buffer in buffers where buffer.count > 0 {
                bytes.withUnsafeBytes { source in
                    buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[position..<(position + buffer.count)]))
                }
                position += buffer.count
            }
        }
    }

    /// Copies bytes into the array.
    public func write(from buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        try checkRange(offset: offset, length: UInt64(totalLength(buffers)))
        storage.withLock { bytes in
            var position = Int(offset)
            for buffer in buffers {
                bytes.replaceSubrange(position..<(position + buffer.count), with: buffer)
                position += buffer.count
            }
        }
    }

    /// Counts the call; memory is always durable enough.
    public func flush() throws(BlockError) {
        flushes.withLock { $0 += 1 }
    }

    /// Zeroes the range.
    public func discard(offset: UInt64, length: UInt64) throws(BlockError) {
        try writeZeroes(offset: offset, length: length, unmap: true)
    }

    /// Zeroes the range.
    public func writeZeroes(offset: UInt64, length: UInt64, unmap: Bool) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        try checkRange(offset: offset, length: length)
        storage.withLock { bytes in
            for index in Int(offset)..<Int(offset + length) { bytes[index] = 0 }
        }
    }
}
