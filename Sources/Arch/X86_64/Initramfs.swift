import GuestMemory

/// Where an initramfs was put in guest memory.
public struct InitramfsPlacement: Hashable, Sendable {
    /// Its first byte (page aligned).
    public var address: GuestAddress
    /// Its size in bytes.
    public var size: UInt64

    /// Creates a placement.
    public init(address: GuestAddress, size: UInt64) {
        self.address = address
        self.size = size
    }
}

/// Places an initramfs as high as possible in RAM below 4 GiB, as Cloud Hypervisor does:
/// the highest page-aligned address from which it fits below the end of the RAM that
/// starts at 0 (capped at the 32-bit hole) and, for a bzImage, inside `initrd_addr_max`.
public enum InitramfsLoader {
    /// The page size the address is aligned to.
    public static let pageSize: UInt64 = 4096

    /// The address at which `size` bytes of initramfs would go.
    ///
    /// - Parameters:
    ///   - maxAddress: the highest address the initramfs may occupy (a bzImage's
    ///     `initrd_addr_max`); `nil` for no limit besides RAM (PVH).
    ///   - lowestAddress: the initramfs may not start below it (pass the kernel's load end so
    ///     the two cannot overlap).
    /// - Throws: `ArchError.initramfsDoesNotFit` when no such address exists.
    public static func placement(size: UInt64, memory: GuestMemory, maxAddress: UInt64? = nil,
                                 lowestAddress: GuestAddress = .zero) throws(ArchError) -> GuestAddress {
        var top = X86Layout.lowRAMEnd(memory: memory)
        if let maxAddress, maxAddress < UInt64.max {
            top = min(top, maxAddress + 1)
        }
        guard size <= top else {
            throw .initramfsDoesNotFit(size: size, limit: top, lowest: lowestAddress.rawValue)
        }
        let address = (top - size) / pageSize * pageSize
        guard address >= lowestAddress.rawValue else {
            throw .initramfsDoesNotFit(size: size, limit: top, lowest: lowestAddress.rawValue)
        }
        return GuestAddress(address)
    }

    /// Places `image` (see `placement(size:memory:maxAddress:lowestAddress:)`) and copies it there.
    ///
    /// - Throws: `.initramfsDoesNotFit`, or `.guestMemory` if the copy fails.
    public static func load(_ image: [UInt8], into memory: GuestMemory, maxAddress: UInt64? = nil,
                            lowestAddress: GuestAddress = .zero) throws(ArchError) -> InitramfsPlacement {
        let address = try placement(size: UInt64(image.count), memory: memory, maxAddress: maxAddress,
                                    lowestAddress: lowestAddress)
        do {
            try memory.write(bytes: image, at: address)
        } catch {
            throw .guestMemory(while: "copying the initramfs to \(address)", error)
        }
        return InitramfsPlacement(address: address, size: UInt64(image.count))
    }
}
