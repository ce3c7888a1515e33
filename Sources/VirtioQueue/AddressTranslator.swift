/// Maps the addresses a driver puts in a virtqueue (I/O virtual addresses, when the device
/// sits behind a virtual IOMMU and `VIRTIO_F_ACCESS_PLATFORM` is negotiated) to guest
/// physical addresses.
///
/// A ``SplitQueue`` with a translator maps its three ring areas once, when it is activated,
/// and each descriptor's buffer (and each indirect table) when it pops a chain; an address
/// the translator refuses is a queue error, so a driver that names unmapped memory breaks
/// only its own device. Cloud Hypervisor's analogue is vm-virtio's `AccessPlatform`.
public protocol AddressTranslator: Sendable {
    /// The guest physical address of the `length` bytes at I/O virtual address `address`,
    /// or `nil` unless the whole range is mapped, contiguously, to guest physical memory.
    /// `length` is at least 1.
    func translate(_ address: UInt64, length: UInt64) -> UInt64?
}
