/// A device that answers guest accesses to a range of port I/O or MMIO addresses.
///
/// The ``Bus`` hands each access to the device with the offset from the start of the
/// range the device was inserted at, so one device type can be mapped anywhere.
/// Values travel in the low `size` bytes of a `UInt64`, little-endian: a 1-byte read
/// returns `0...0xff`, a 2-byte read returns `0...0xffff`, and so on. `size` is the
/// access width the vCPU used (1, 2, 4 or 8 bytes); a device decides what a width it
/// does not decode means (legacy devices read 0 and ignore such writes).
///
/// Devices are reference types shared between vCPU threads, so they must be
/// `Sendable`: keep mutable state behind a lock (for example `Synchronization.Mutex`).
/// A device must never trap on any `offset`/`size` pair: both come from the guest.
public protocol BusDevice: AnyObject, Sendable {
    /// A short name for logs and error messages (for example `"serial"` or `"i8042"`).
    var name: String { get }

    /// Answers a guest read of `size` bytes at `offset` from the device's base address.
    ///
    /// - Returns: the value in the low `size` bytes, little-endian; higher bytes are ignored.
    func read(offset: UInt64, size: Int) -> UInt64

    /// Accepts a guest write of the low `size` bytes of `value` at `offset` from the
    /// device's base address.
    func write(offset: UInt64, size: Int, value: UInt64)
}

extension BusDevice {
    /// The device's type name, used when a device does not name itself.
    public var name: String { String(describing: type(of: self)) }
}
