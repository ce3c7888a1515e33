/// The Linux x86 boot protocol's setup header: bytes 0x1F1..<0x26C of a bzImage, which a
/// boot loader copies into `boot_params` at the same offsets and partly fills in.
///
/// The header is kept as its raw bytes (so fields this type does not name survive the trip
/// into the zero page unchanged) with typed accessors at the offsets of
/// `Documentation/arch/x86/boot.rst`. Offsets below are those in the image and in
/// `boot_params`, which coincide.
public struct SetupHeader: Hashable, Sendable {
    /// The header's first byte in the image and in `boot_params` (`setup_sects`).
    public static let startOffset = 0x1F1
    /// The first byte after the header (protocol 2.15's `kernel_info_offset` ends here).
    public static let endOffset = 0x26C
    /// The header's size in bytes (123).
    public static let size = endOffset - startOffset
    /// `boot_flag`'s required value.
    public static let bootFlagMagic: UInt16 = 0xAA55
    /// `header`'s required value, "HdrS".
    public static let headerMagic: UInt32 = 0x5372_6448
    /// `loadflags` bit 0: the protected-mode code is loaded at 0x100000.
    public static let loadedHigh: UInt8 = 0x01
    /// `loadflags` bit 7: the heap pointer is valid.
    public static let canUseHeap: UInt8 = 0x80
    /// `xloadflags` bit 0: the kernel has the 64-bit entry point at load address + 0x200.
    public static let xlfKernel64: UInt16 = 0x0001
    /// `type_of_loader` for a boot loader without an assigned ID.
    public static let loaderTypeUndefined: UInt8 = 0xFF

    /// The raw header, `size` bytes.
    public private(set) var bytes: [UInt8]

    /// A header from its `size` raw bytes.
    ///
    /// - Throws: `ArchError.invalidSetupHeader` when `bytes` is not exactly `size` long.
    public init(bytes: [UInt8]) throws(ArchError) {
        guard bytes.count == Self.size else {
            throw .invalidSetupHeader(reason: "it is \(bytes.count) bytes long instead of \(Self.size)")
        }
        self.bytes = bytes
    }

    /// An empty header with only `boot_flag`, `header` and `kernel_alignment` (16 MiB) set,
    /// as Cloud Hypervisor builds it when an ELF kernel is entered at its 64-bit entry.
    public static func minimal() -> SetupHeader {
        var header = SetupHeader(unchecked: Array(repeating: 0, count: size))
        header.set(UInt16.self, at: 0x1FE, bootFlagMagic)
        header.set(UInt32.self, at: 0x202, headerMagic)
        header.set(UInt32.self, at: 0x230, 0x0100_0000)
        return header
    }

    init(unchecked bytes: [UInt8]) { self.bytes = bytes }

    /// The field of `type` at `offset` (an image / `boot_params` offset inside the header).
    public func value<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        guard let value = bytes.loadLittleEndian(type, at: offset - Self.startOffset) else {
            preconditionFailure("setup header field at \(hex(offset)) is outside \(hex(Self.startOffset))..<\(hex(Self.endOffset))")
        }
        return value
    }

    /// Stores `value` little-endian at `offset` (an image / `boot_params` offset).
    public mutating func set<T: FixedWidthInteger>(_ type: T.Type, at offset: Int, _ value: T) {
        let relative = offset - Self.startOffset
        precondition(relative >= 0 && relative + T.bitWidth / 8 <= Self.size,
                     "setup header field at \(hex(offset)) is outside \(hex(Self.startOffset))..<\(hex(Self.endOffset))")
        for index in 0..<(T.bitWidth / 8) {
            bytes[relative + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    /// `setup_sects` (0x1F1): the setup code's size in 512-byte sectors; 0 means 4.
    public var setupSectors: UInt8 { value(UInt8.self, at: 0x1F1) }
    /// `syssize` (0x1F4): the protected-mode code's size in 16-byte paragraphs.
    public var sysSize: UInt32 { value(UInt32.self, at: 0x1F4) }
    /// `boot_flag` (0x1FE): 0xAA55.
    public var bootFlag: UInt16 { value(UInt16.self, at: 0x1FE) }
    /// `jump` (0x200): the jump instruction; its second byte says where the header ends.
    public var jump: UInt16 { value(UInt16.self, at: 0x200) }
    /// `header` (0x202): "HdrS".
    public var header: UInt32 { value(UInt32.self, at: 0x202) }
    /// `version` (0x206): the boot protocol version, major in the high byte.
    public var version: UInt16 { value(UInt16.self, at: 0x206) }
    /// `type_of_loader` (0x210).
    public var typeOfLoader: UInt8 {
        get { value(UInt8.self, at: 0x210) }
        set { set(UInt8.self, at: 0x210, newValue) }
    }
    /// `loadflags` (0x211).
    public var loadFlags: UInt8 {
        get { value(UInt8.self, at: 0x211) }
        set { set(UInt8.self, at: 0x211, newValue) }
    }
    /// `code32_start` (0x214): where the protected-mode kernel is loaded.
    public var code32Start: UInt32 {
        get { value(UInt32.self, at: 0x214) }
        set { set(UInt32.self, at: 0x214, newValue) }
    }
    /// `ramdisk_image` (0x218): the initramfs address (low 32 bits).
    public var ramdiskImage: UInt32 {
        get { value(UInt32.self, at: 0x218) }
        set { set(UInt32.self, at: 0x218, newValue) }
    }
    /// `ramdisk_size` (0x21C): the initramfs size (low 32 bits).
    public var ramdiskSize: UInt32 {
        get { value(UInt32.self, at: 0x21C) }
        set { set(UInt32.self, at: 0x21C, newValue) }
    }
    /// `heap_end_ptr` (0x224).
    public var heapEndPointer: UInt16 {
        get { value(UInt16.self, at: 0x224) }
        set { set(UInt16.self, at: 0x224, newValue) }
    }
    /// `cmd_line_ptr` (0x228): the command line address (low 32 bits).
    public var commandLinePointer: UInt32 {
        get { value(UInt32.self, at: 0x228) }
        set { set(UInt32.self, at: 0x228, newValue) }
    }
    /// `initrd_addr_max` (0x22C): the highest address the initramfs may occupy.
    public var initrdAddressMax: UInt32 { value(UInt32.self, at: 0x22C) }
    /// `kernel_alignment` (0x230): the alignment a relocated kernel needs.
    public var kernelAlignment: UInt32 { value(UInt32.self, at: 0x230) }
    /// `relocatable_kernel` (0x234): non-zero when the kernel may be loaded elsewhere.
    public var relocatableKernel: UInt8 { value(UInt8.self, at: 0x234) }
    /// `xloadflags` (0x236).
    public var xLoadFlags: UInt16 { value(UInt16.self, at: 0x236) }
    /// `cmdline_size` (0x238): the longest command line the kernel takes, without its NUL.
    public var commandLineSize: UInt32 {
        get { value(UInt32.self, at: 0x238) }
        set { set(UInt32.self, at: 0x238, newValue) }
    }
    /// `pref_address` (0x258): the kernel's preferred load (and run) address.
    public var preferredAddress: UInt64 { value(UInt64.self, at: 0x258) }
    /// `init_size` (0x260): the memory the kernel needs from its run address before it
    /// reads the memory map (it decompresses itself there).
    public var initSize: UInt32 { value(UInt32.self, at: 0x260) }
}
