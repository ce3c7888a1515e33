#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a virtio-rng device takes its random bytes.
public protocol EntropySource: Sendable {
    /// Returns exactly `count` random bytes.
    ///
    /// - Throws: ``VirtioDeviceError/backend(_:)`` when the source cannot deliver them.
    func randomBytes(count: Int) throws(VirtioDeviceError) -> [UInt8]
}

/// Entropy read from an open file descriptor, normally `/dev/urandom` (Cloud
/// Hypervisor's default `--rng src=/dev/urandom`). The descriptor is borrowed: the
/// caller opens it, keeps it open while the device lives, and closes it.
public struct FileEntropySource: EntropySource {
    /// The borrowed descriptor.
    public let fileDescriptor: Int32

    /// Reads from `fileDescriptor`.
    public init(fileDescriptor: Int32) {
        self.fileDescriptor = fileDescriptor
    }

    /// Reads until `count` bytes arrived, retrying `EINTR` and short reads.
    public func randomBytes(count: Int) throws(VirtioDeviceError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let result = bytes.withUnsafeMutableBytes { buffer in
                // SAFETY: the pointer and length describe the unfilled tail of `bytes`, alive for the call.
                read(fileDescriptor, buffer.baseAddress! + filled, count - filled)
            }
            if result > 0 {
                filled += result
            } else if result == 0 {
                throw .backend("the entropy source (fd \(fileDescriptor)) reached end of file")
            } else if errno != EINTR {
                throw .backend("reading the entropy source (fd \(fileDescriptor)) failed: \(String(cString: strerror(errno)))")
            }
        }
        return bytes
    }
}
