import GuestMemory

/// One module handed to a PVH guest (`struct hvm_modlist_entry`, 32 bytes): the
/// initramfs, for Linux.
public struct PVHModule: Hashable, Sendable {
    /// The module's guest physical address (`paddr`).
    public var address: GuestAddress
    /// Its size in bytes (`size`).
    public var size: UInt64
    /// The address of its NUL-terminated command line, or 0 (`cmdline_paddr`).
    public var commandLineAddress: GuestAddress

    /// Creates a module entry.
    public init(address: GuestAddress, size: UInt64, commandLineAddress: GuestAddress = .zero) {
        self.address = address
        self.size = size
        self.commandLineAddress = commandLineAddress
    }

    /// The encoded size of one entry.
    public static let encodedSize = 32

    /// `paddr` u64, `size` u64, `cmdline_paddr` u64, `reserved` u64.
    public var bytes: [UInt8] {
        var buffer = LittleEndianBuffer(size: Self.encodedSize)
        buffer.put(address.rawValue, at: 0)
        buffer.put(size, at: 8)
        buffer.put(commandLineAddress.rawValue, at: 16)
        return buffer.bytes
    }
}

/// The PVH boot ABI's start of day information (`struct hvm_start_info`, version 1, 56
/// bytes), with its module list and memory map, encoded byte by byte.
///
/// At a PVH entry `rbx` holds the start info's address. Layout: `magic` u32 0x00,
/// `version` u32 0x04, `flags` u32 0x08, `nr_modules` u32 0x0C, `modlist_paddr` u64 0x10,
/// `cmdline_paddr` u64 0x18, `rsdp_paddr` u64 0x20, `memmap_paddr` u64 0x28,
/// `memmap_entries` u32 0x30, `reserved` u32 0x34. Each memory-map entry
/// (`hvm_memmap_table_entry`) is `addr` u64, `size` u64, `type` u32, `reserved` u32.
public struct PVHStartInfo: Hashable, Sendable {
    /// `XEN_HVM_START_MAGIC_VALUE`.
    public static let magic: UInt32 = 0x336E_C578
    /// The structure version written (1: with the memory map fields).
    public static let version: UInt32 = 1
    /// The encoded size of the start info.
    public static let encodedSize = 56
    /// The encoded size of one memory-map entry.
    public static let memmapEntrySize = 24

    /// `flags` (`SIF_*`; 0 for an ordinary guest).
    public var flags: UInt32
    /// The modules (the initramfs).
    public var modules: [PVHModule]
    /// The NUL-terminated command line's address, if any.
    public var commandLineAddress: GuestAddress?
    /// The ACPI RSDP's address, if any.
    public var rsdpAddress: GuestAddress?
    /// The memory map.
    public var memoryMap: [E820Entry]

    /// Creates the start info.
    public init(flags: UInt32 = 0, modules: [PVHModule] = [], commandLineAddress: GuestAddress? = nil,
                rsdpAddress: GuestAddress? = nil, memoryMap: [E820Entry] = []) {
        self.flags = flags
        self.modules = modules
        self.commandLineAddress = commandLineAddress
        self.rsdpAddress = rsdpAddress
        self.memoryMap = memoryMap
    }

    /// The 56-byte `hvm_start_info`, pointing at a module list at `modlistAddress` (0 when
    /// there are no modules) and a memory map at `memmapAddress`.
    public func encodeStartInfo(modlistAddress: GuestAddress = X86Layout.pvhModlistStart,
                                memmapAddress: GuestAddress = X86Layout.pvhMemmapStart) -> [UInt8] {
        var buffer = LittleEndianBuffer(size: Self.encodedSize)
        buffer.put(Self.magic, at: 0x00)
        buffer.put(Self.version, at: 0x04)
        buffer.put(flags, at: 0x08)
        buffer.put(UInt32(modules.count), at: 0x0C)
        buffer.put(modules.isEmpty ? 0 : modlistAddress.rawValue, at: 0x10)
        buffer.put(commandLineAddress?.rawValue ?? 0, at: 0x18)
        buffer.put(rsdpAddress?.rawValue ?? 0, at: 0x20)
        buffer.put(memmapAddress.rawValue, at: 0x28)
        buffer.put(UInt32(memoryMap.count), at: 0x30)
        return buffer.bytes
    }

    /// The module list: one 32-byte `hvm_modlist_entry` per module.
    public func encodeModuleList() -> [UInt8] { modules.flatMap(\.bytes) }

    /// The memory map: one 24-byte `hvm_memmap_table_entry` per entry.
    public func encodeMemoryMap() -> [UInt8] {
        var buffer = LittleEndianBuffer(size: memoryMap.count * Self.memmapEntrySize)
        for (index, entry) in memoryMap.enumerated() {
            let base = index * Self.memmapEntrySize
            buffer.put(entry.address, at: base)
            buffer.put(entry.size, at: base + 8)
            buffer.put(entry.type.rawValue, at: base + 16)
        }
        return buffer.bytes
    }

    /// Writes the start info, module list and memory map (by default at 0x6000, 0x6040 and
    /// 0x7000, as Cloud Hypervisor places them).
    ///
    /// - Throws: `.bootStructuresOverlap` when two of the three would share a byte,
    ///   `.guestMemory` when RAM does not back one of them. The checks all run first.
    public func write(to memory: GuestMemory, startInfoAddress: GuestAddress = X86Layout.pvhInfoStart,
                      modlistAddress: GuestAddress = X86Layout.pvhModlistStart,
                      memmapAddress: GuestAddress = X86Layout.pvhMemmapStart) throws(ArchError) {
        let pieces: [(name: String, address: GuestAddress, bytes: [UInt8])] = [
            ("the PVH start info", startInfoAddress, encodeStartInfo(modlistAddress: modlistAddress, memmapAddress: memmapAddress)),
            ("the PVH module list", modlistAddress, encodeModuleList()),
            ("the PVH memory map", memmapAddress, encodeMemoryMap()),
        ].filter { !$0.bytes.isEmpty }
        for (index, first) in pieces.enumerated() {
            for second in pieces[(index + 1)...] {
                let firstEnd = UInt128(first.address.rawValue) + UInt128(first.bytes.count)
                let secondEnd = UInt128(second.address.rawValue) + UInt128(second.bytes.count)
                if UInt128(first.address.rawValue) < secondEnd && UInt128(second.address.rawValue) < firstEnd {
                    throw .bootStructuresOverlap(first: first.name, second: second.name)
                }
            }
            do {
                try memory.checkRange(first.address, length: first.bytes.count, writing: true)
            } catch {
                throw .guestMemory(while: "placing \(first.name) at \(first.address)", error)
            }
        }
        for piece in pieces {
            do {
                try memory.write(bytes: piece.bytes, at: piece.address)
            } catch {
                throw .guestMemory(while: "writing \(piece.name) at \(piece.address)", error)
            }
        }
    }
}
