import Devices
import Glibc
import HostSystem

/// Serial output written straight to a descriptor (standard output, a file, a pty).
final class DescriptorSerialOutput: SerialOutput {
    let descriptor: Int32
    private let owner: OwnedFileDescriptor?

    /// Writes to `descriptor`; `owner`, if given, keeps it open.
    init(descriptor: Int32, owner: OwnedFileDescriptor? = nil) {
        self.descriptor = descriptor
        self.owner = owner
    }

    func write(_ byte: UInt8) {
        var value = byte
        // A full pty or pipe drops the byte rather than stalling the vCPU.
        _ = Glibc.write(descriptor, &value, 1)
    }
}
