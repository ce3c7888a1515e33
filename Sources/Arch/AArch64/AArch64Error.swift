import GuestMemory

/// Why planning an arm64 guest's memory, loading its `Image` or writing its device tree failed.
///
/// The AArch64 counterpart of `ArchError`: each case carries the numbers involved, and
/// `description` is one sentence naming them (addresses in hexadecimal).
public enum AArch64Error: Error, Equatable, Sendable, CustomStringConvertible {
    // MARK: Memory layout

    /// A RAM size of 0, not a multiple of 4 KiB, or one whose top passes the 64-bit space.
    case invalidRAMSize(UInt64)
    /// A vCPU count of 0 or above the layout's maximum.
    case invalidVCPUCount(count: Int, max: Int)
    /// No page-aligned place at the top of RAM holds `size` bytes of initramfs above `lowest`.
    case initramfsDoesNotFit(size: UInt64, ramEnd: UInt64, lowest: UInt64)

    // MARK: Image

    /// The file is shorter than the 64-byte `Image` header.
    case imageTruncated(fileSize: Int)
    /// Bytes 56..<60 are not "ARM\x64" (0x644d5241).
    case imageBadMagic(found: UInt32)
    /// Bit 0 of `flags` says the kernel is big-endian.
    case imageBigEndian
    /// A header field is unusable, for the reason given.
    case imageMalformed(reason: String)
    /// The load address cannot be used, for the reason given.
    case imageBadLoadAddress(address: UInt64, reason: String)
    /// Guest RAM does not back `[start, end)`, the memory the kernel occupies.
    case imageOutsideRAM(start: UInt64, end: UInt64, cause: GuestMemoryError)

    // MARK: Device tree

    /// A node or property name the device tree format cannot hold, for the reason given.
    case fdtInvalidName(String, reason: String)
    /// Nodes and properties were written out of order (the string says what happened).
    case fdtMisuse(String)
    /// The finished blob is `size` bytes, more than the `max` the kernel accepts.
    case fdtTooLarge(size: Int, max: Int)
    /// The device-tree configuration is unusable, for the reason given.
    case invalidDeviceTreeConfiguration(reason: String)

    /// One sentence explaining the failure with its numbers.
    public var description: String {
        switch self {
        case let .invalidRAMSize(size):
            return "arm64 guest RAM of \(size) bytes (\(hex(size))) is unusable: it must be a non-zero multiple of 4 KiB "
                + "whose top fits in 64 bits"
        case let .invalidVCPUCount(count, max):
            return "an arm64 guest takes 1 to \(max) vCPUs (the GIC redistributor space is sized for that), not \(count)"
        case let .initramfsDoesNotFit(size, ramEnd, lowest):
            return "an initramfs of \(size) bytes (\(hex(size))) does not fit at the top of RAM ending at \(hex(ramEnd)) "
                + "above \(hex(lowest))"
        case let .imageTruncated(fileSize):
            return "the arm64 kernel is truncated: it has \(fileSize) bytes, fewer than the 64-byte Image header"
        case let .imageBadMagic(found):
            return "the kernel is not an arm64 Image: bytes 56..<60 hold \(hex(found)) instead of \"ARM\\x64\" (0x644d5241)"
        case .imageBigEndian:
            return "the arm64 Image is big-endian (bit 0 of its flags); only little-endian kernels are supported"
        case let .imageMalformed(reason):
            return "the arm64 Image header is malformed: \(reason)"
        case let .imageBadLoadAddress(address, reason):
            return "the arm64 Image cannot be loaded with its base at \(hex(address)): \(reason)"
        case let .imageOutsideRAM(start, end, cause):
            return "the arm64 kernel needs guest RAM over [\(hex(start)), \(hex(end))) (its image_size), but: \(cause)"
        case let .fdtInvalidName(name, reason):
            return "the device-tree name \"\(name)\" is unusable: \(reason)"
        case let .fdtMisuse(what):
            return "the device tree was written out of order: \(what)"
        case let .fdtTooLarge(size, max):
            return "the device tree blob has \(size) bytes but an arm64 kernel accepts at most \(max)"
        case let .invalidDeviceTreeConfiguration(reason):
            return "the device-tree configuration is unusable: \(reason)"
        }
    }
}
