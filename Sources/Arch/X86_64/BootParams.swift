import GuestMemory

/// The Linux zero page (`struct boot_params`, 4 KiB) for a 64-bit boot-protocol entry,
/// encoded byte by byte.
///
/// Fields written (offsets in the page): `acpi_rsdp_addr` 0x070, `ext_ramdisk_image`
/// 0x0C0, `ext_ramdisk_size` 0x0C4, `ext_cmd_line_ptr` 0x0C8, `e820_entries` 0x1E8, the
/// setup header at 0x1F1 (with `type_of_loader` 0x210, `ramdisk_image` 0x218,
/// `ramdisk_size` 0x21C, `cmd_line_ptr` 0x228 and `cmdline_size` 0x238 filled in), and the
/// E820 table at 0x2D0 (up to 128 entries of 20 bytes). Everything else is zero, the
/// `sentinel` byte (0x1EF) included, so the kernel trusts the page as a whole.
public struct BootParams: Hashable, Sendable {
    /// The size of the zero page.
    public static let size = 4096
    /// The most entries the E820 table holds.
    public static let maxE820Entries = 128
    /// Offset of `acpi_rsdp_addr`.
    public static let acpiRSDPAddressOffset = 0x070
    /// Offset of `ext_ramdisk_image` (bits 63..32 of the initramfs address).
    public static let extRamdiskImageOffset = 0x0C0
    /// Offset of `ext_ramdisk_size` (bits 63..32 of the initramfs size).
    public static let extRamdiskSizeOffset = 0x0C4
    /// Offset of `ext_cmd_line_ptr` (bits 63..32 of the command line address).
    public static let extCommandLinePointerOffset = 0x0C8
    /// Offset of `e820_entries`.
    public static let e820EntriesOffset = 0x1E8
    /// Offset of `e820_table`.
    public static let e820TableOffset = 0x2D0

    /// The setup header: the bzImage's own, or `SetupHeader.minimal()` for an ELF kernel.
    public var setupHeader: SetupHeader
    /// Where the NUL-terminated command line is (`cmd_line_ptr`), if there is one.
    public var commandLineAddress: GuestAddress?
    /// The command line's size with its NUL, stored in `cmdline_size` as Cloud Hypervisor does.
    public var commandLineSize: Int
    /// The initramfs, if any.
    public var initramfs: InitramfsPlacement?
    /// The memory map.
    public var e820: [E820Entry]
    /// The ACPI RSDP's address, if the VMM built ACPI tables.
    public var acpiRSDPAddress: GuestAddress?

    /// Creates the zero page's contents.
    public init(setupHeader: SetupHeader = .minimal(), commandLineAddress: GuestAddress? = nil, commandLineSize: Int = 0,
                initramfs: InitramfsPlacement? = nil, e820: [E820Entry] = [], acpiRSDPAddress: GuestAddress? = nil) {
        self.setupHeader = setupHeader
        self.commandLineAddress = commandLineAddress
        self.commandLineSize = commandLineSize
        self.initramfs = initramfs
        self.e820 = e820
        self.acpiRSDPAddress = acpiRSDPAddress
    }

    /// The 4096 bytes of the zero page.
    ///
    /// - Throws: `.invalidSetupHeader` when `boot_flag` is not 0xAA55 or `header` not
    ///   "HdrS"; `.tooManyE820Entries` past 128 entries.
    public func encode() throws(ArchError) -> [UInt8] {
        guard setupHeader.bootFlag == SetupHeader.bootFlagMagic else {
            throw .invalidSetupHeader(reason: "its boot_flag is \(hex(setupHeader.bootFlag)) instead of 0xaa55")
        }
        guard setupHeader.header == SetupHeader.headerMagic else {
            throw .invalidSetupHeader(reason: "its header field is \(hex(setupHeader.header)) instead of \"HdrS\" (0x53726448)")
        }
        guard e820.count <= Self.maxE820Entries else {
            throw .tooManyE820Entries(count: e820.count, max: Self.maxE820Entries)
        }
        var header = setupHeader
        if header.typeOfLoader == 0 { header.typeOfLoader = SetupHeader.loaderTypeUndefined }
        var page = LittleEndianBuffer(size: Self.size)
        if let commandLineAddress {
            header.commandLinePointer = UInt32(truncatingIfNeeded: commandLineAddress.rawValue)
            header.commandLineSize = UInt32(clamping: commandLineSize)
            page.put(UInt32(truncatingIfNeeded: commandLineAddress.rawValue >> 32), at: Self.extCommandLinePointerOffset)
        }
        if let initramfs {
            header.ramdiskImage = UInt32(truncatingIfNeeded: initramfs.address.rawValue)
            header.ramdiskSize = UInt32(truncatingIfNeeded: initramfs.size)
            page.put(UInt32(truncatingIfNeeded: initramfs.address.rawValue >> 32), at: Self.extRamdiskImageOffset)
            page.put(UInt32(truncatingIfNeeded: initramfs.size >> 32), at: Self.extRamdiskSizeOffset)
        }
        if let acpiRSDPAddress { page.put(acpiRSDPAddress.rawValue, at: Self.acpiRSDPAddressOffset) }
        page.put(bytes: header.bytes, at: SetupHeader.startOffset)
        page.put(UInt8(e820.count), at: Self.e820EntriesOffset)
        for (index, entry) in e820.enumerated() {
            page.put(bytes: entry.bootParamsBytes, at: Self.e820TableOffset + index * E820Entry.bootParamsEncodedSize)
        }
        return page.bytes
    }

    /// Encodes the zero page and writes it at `address` (by default `X86Layout.zeroPageStart`).
    ///
    /// - Throws: the `encode()` errors, or `.guestMemory` when RAM does not back the page.
    public func write(to memory: GuestMemory, at address: GuestAddress = X86Layout.zeroPageStart) throws(ArchError) {
        let bytes = try encode()
        do {
            try memory.write(bytes: bytes, at: address)
        } catch {
            throw .guestMemory(while: "writing the zero page (boot_params)", error)
        }
    }
}
