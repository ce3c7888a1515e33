// What the three Arm PrimeCell devices (PL011, PL031, PL061) share: 32-bit registers read
// with accesses of 1 to 4 bytes.

/// The low `size` bytes (1 to 4) of a 32-bit register value, as an MMIO read returns them.
func primeCellReadValue(_ value: UInt32, size: Int) -> UInt64 {
    UInt64(value) & (size == 4 ? 0xFFFF_FFFF : (1 << (8 * UInt64(size))) - 1)
}
