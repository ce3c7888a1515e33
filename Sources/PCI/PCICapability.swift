/// Well-known capability ids of the standard (256-byte) capability list.
public enum PCICapabilityID {
    /// Power management.
    public static let powerManagement: UInt8 = 0x01
    /// Message signalled interrupts.
    public static let msi: UInt8 = 0x05
    /// Vendor-specific (virtio-pci uses it for its structure pointers).
    public static let vendorSpecific: UInt8 = 0x09
    /// PCI Express.
    public static let pciExpress: UInt8 = 0x10
    /// MSI-X.
    public static let msix: UInt8 = 0x11
}

/// A capability that can be appended to a configuration space's capability list.
///
/// The configuration space writes the id and the next pointer itself; a capability
/// supplies only the bytes that follow them and which of their bits the guest may write.
public protocol PCICapability: Sendable {
    /// The capability id (byte 0), for example ``PCICapabilityID/msix``.
    var id: UInt8 { get }
    /// The bytes after the id and the next pointer (offset 2 onwards), little-endian.
    var body: [UInt8] { get }
    /// One byte per body byte: a set bit is writable by the guest, a clear one read-only.
    var writableMask: [UInt8] { get }
}

/// A capability given as raw bytes, for vendor-specific or otherwise unmodelled capabilities.
public struct RawPCICapability: PCICapability, Equatable {
    /// The capability id.
    public var id: UInt8
    /// The bytes after the id and the next pointer.
    public var body: [UInt8]
    /// The guest-writable bits of each body byte.
    public var writableMask: [UInt8]

    /// Creates a capability; by default every byte of it is read-only.
    public init(id: UInt8, body: [UInt8], writableMask: [UInt8]? = nil) {
        self.id = id
        self.body = body
        self.writableMask = writableMask ?? [UInt8](repeating: 0, count: body.count)
    }
}

/// A PCI Express extended capability (in the configuration space at 0x100 and above),
/// whose header is a 16-bit id, a 4-bit version and a 12-bit next pointer.
public struct PCIExtendedCapability: Sendable, Equatable {
    /// The 16-bit extended capability id.
    public var id: UInt16
    /// The 4-bit capability version.
    public var version: UInt8
    /// The bytes after the 4-byte header.
    public var body: [UInt8]
    /// The guest-writable bits of each body byte.
    public var writableMask: [UInt8]

    /// Creates an extended capability; by default every byte of it is read-only.
    public init(id: UInt16, version: UInt8, body: [UInt8], writableMask: [UInt8]? = nil) {
        self.id = id
        self.version = version & 0xf
        self.body = body
        self.writableMask = writableMask ?? [UInt8](repeating: 0, count: body.count)
    }
}
