#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a virtio-pmem device flushes when the guest asks: the host file behind the guest's
/// persistent memory (mapped into the guest by the VMM, not by the device).
public protocol PmemBackend: Sendable {
    /// Makes every write the guest made through the mapping durable in the backing file.
    ///
    /// - Throws: ``VirtioDeviceError/backend(_:)`` when the host cannot; the guest is then
    ///   answered `VIRTIO_PMEM_RESP_TYPE_EIO`.
    func flush() throws(VirtioDeviceError)
}

/// The backing file, flushed with `fsync(2)` (Cloud Hypervisor's `sync_all`). The descriptor
/// is borrowed: the caller opens it, keeps it open while the device lives, and closes it.
public struct FilePmemBackend: PmemBackend {
    /// The borrowed descriptor of the backing file.
    public let fileDescriptor: Int32

    /// Flushes `fileDescriptor`.
    public init(fileDescriptor: Int32) {
        self.fileDescriptor = fileDescriptor
    }

    /// `fsync(2)`, retrying `EINTR`.
    public func flush() throws(VirtioDeviceError) {
        while fsync(fileDescriptor) != 0 {
            let code = errno
            if code != EINTR {
                throw .backend("fsync of the pmem file (fd \(fileDescriptor)) failed: \(String(cString: strerror(code)))")
            }
        }
    }
}
