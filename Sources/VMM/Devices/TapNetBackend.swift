import CLinux
import Glibc
import HostSystem
import VirtioDevices

/// One queue of a host TAP interface as a virtio-net backend: `readv`/`writev` of
/// `virtio_net_hdr_v1` + frame on a non-blocking descriptor, straight from and into the
/// buffers the device hands over (guest memory or its bounce buffer).
public final class TapNetBackend: NetBackend {
    /// The interface's name, for errors.
    public let interface: String
    /// The TAP queue's descriptor.
    public let queue: OwnedFileDescriptor

    /// Serves `queue`, one queue of the TAP interface `interface`.
    public init(interface: String, queue: OwnedFileDescriptor) {
        self.interface = interface
        self.queue = queue
    }

    /// The queue's descriptor: readable when a packet waits.
    public var readinessDescriptor: Int32? { queue.rawValue }

    /// Reads one packet (`virtio_net_hdr_v1` and frame); `nil` when none waits.
    public func receive(into buffers: [UnsafeMutableRawBufferPointer]) throws(NetBackendError) -> Int? {
        // The vectors live on the stack for the call (no allocation per packet).
        let count = withUnsafeTemporaryAllocation(of: iovec.self, capacity: buffers.count) { vectors in
            for (index, buffer) in buffers.enumerated() {
                vectors.initializeElement(at: index, to: iovec(iov_base: buffer.baseAddress, iov_len: buffer.count))
            }
            return Self.retrying { readv(queue.rawValue, vectors.baseAddress, Int32(vectors.count)) }
        }
        if count >= 0 { return count }
        switch Int32(-count) {
        case EAGAIN: return nil
        case let code: throw .host(call: "readv(\(interface))", errno: code)
        }
    }

    /// Runs a system call until it is not interrupted: its byte count, or minus the errno
    /// it failed with.
    private static func retrying(_ call: () -> Int) -> Int {
        while true {
            let count = call()
            if count >= 0 { return count }
            let code = clinux_errno()
            if code != EINTR { return -Int(code) }
        }
    }

    /// Writes one packet; `false` when the kernel dropped it.
    public func send(_ buffers: [UnsafeRawBufferPointer]) throws(NetBackendError) -> Bool {
        let count = withUnsafeTemporaryAllocation(of: iovec.self, capacity: buffers.count) { vectors in
            for (index, buffer) in buffers.enumerated() {
                vectors.initializeElement(at: index, to: iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress),
                                                               iov_len: buffer.count))
            }
            return Self.retrying { writev(queue.rawValue, vectors.baseAddress, Int32(vectors.count)) }
        }
        if count >= 0 { return true }
        switch Int32(-count) {
        // A full queue, an interface that is down or a packet the kernel refuses (bad
        // offload header from the guest): the packet is lost, as on a wire.
        case EAGAIN, EIO, ENOBUFS, EINVAL, EMSGSIZE: return false
        case let code: throw .host(call: "writev(\(interface))", errno: code)
        }
    }

    /// Sets the TAP's offloads (`TUNSETOFFLOAD`) to what the driver accepted.
    public func setOffloads(_ offloads: NetOffloads) throws(NetBackendError) {
        do {
            try TapInterface.setOffloads(offloads.rawValue, descriptor: queue.rawValue)
        } catch {
            throw .host(call: "ioctl(TUNSETOFFLOAD) on \(interface)", errno: error.errno)
        }
    }
}
