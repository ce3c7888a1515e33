import GuestMemory

/// Where a kernel went in guest memory and where to start it.
public struct KernelLoadResult: Hashable, Sendable {
    /// The 64-bit entry point: `e_entry` of an ELF `vmlinux`, or the protected-mode kernel's
    /// load address + 0x200 for a bzImage (`startup_64`).
    public var entry: GuestAddress
    /// The 32-bit PVH entry point from the ELF's Xen note, if the image has one. Cloud
    /// Hypervisor boots an ELF `vmlinux` only through it.
    public var pvhEntry: GuestAddress?
    /// The lowest guest address the kernel occupies.
    public var loadStart: GuestAddress
    /// The first guest address after everything the kernel occupies (BSS and, for a
    /// bzImage, the `init_size` it needs to decompress in place).
    public var loadEnd: GuestAddress
    /// The bzImage setup header (bytes 0x1F1..<0x26C of the image, with `code32_start`
    /// updated to the load address) for `BootParams`; `nil` for an ELF.
    public var setupHeader: SetupHeader?

    /// Creates a result.
    public init(entry: GuestAddress, pvhEntry: GuestAddress?, loadStart: GuestAddress, loadEnd: GuestAddress,
                setupHeader: SetupHeader?) {
        self.entry = entry
        self.pvhEntry = pvhEntry
        self.loadStart = loadStart
        self.loadEnd = loadEnd
        self.setupHeader = setupHeader
    }
}

/// Loads an x86-64 ELF kernel (`vmlinux`, or any 64-bit little-endian x86-64 executable)
/// into guest memory, the way linux-loader's ELF loader does for Cloud Hypervisor.
///
/// Every `PT_LOAD` segment is copied to its physical address (`p_paddr`) and the rest of
/// its memory size (the BSS) is zeroed. Every segment is checked against guest RAM and
/// against `lowestAddress` (the boot structures below 1 MiB must stay intact) before the
/// first byte is written, so a refused image leaves guest memory untouched.
public enum ELFLoader {
    /// Loads `image` into `memory`.
    ///
    /// - Parameter lowestAddress: no segment may start below it (default 1 MiB).
    /// - Returns: the entry (`e_entry`), the PVH entry from the Xen note (or `nil`), and the
    ///   lowest and end addresses of the loaded segments.
    /// - Throws: the `ArchError.elf...` case for a malformed image, `.elfSegmentBelowLowestAddress`,
    ///   `.elfSegmentOutsideRAM` for a segment that RAM does not back, `.pvhEntryInvalid`.
    public static func load(_ image: [UInt8], into memory: GuestMemory,
                            lowestAddress: GuestAddress = X86Layout.highRAMStart) throws(ArchError) -> KernelLoadResult {
        let elf = try ELFImage(parsing: image, machine: ELFImage.machineX86_64)
        let pvhEntry = try elf.pvhEntry()
        // Check every segment before writing anything.
        for segment in elf.loadSegments {
            let address = GuestAddress(segment.physicalAddress)
            guard address >= lowestAddress else {
                throw .elfSegmentBelowLowestAddress(index: segment.index, address: segment.physicalAddress,
                                                    lowest: lowestAddress.rawValue)
            }
            guard segment.memorySize <= UInt64(Int.max) else {
                throw .elfSegmentOverflow(index: segment.index, what: "memory size", start: segment.physicalAddress,
                                          size: segment.memorySize)
            }
            do {
                try memory.checkRange(address, length: Int(segment.memorySize), writing: true)
            } catch {
                throw .elfSegmentOutsideRAM(index: segment.index, address: segment.physicalAddress,
                                            size: segment.memorySize, cause: error)
            }
        }
        for segment in elf.loadSegments {
            let address = GuestAddress(segment.physicalAddress)
            let fileStart = Int(segment.fileOffset)
            let fileSize = Int(segment.fileSize)
            do {
                try memory.write(bytes: image[fileStart..<(fileStart + fileSize)], at: address)
                let bssSize = Int(segment.memorySize - segment.fileSize)
                if bssSize > 0 {
                    try memory.fill(0, count: bssSize, at: GuestAddress(segment.physicalAddress + segment.fileSize))
                }
            } catch {
                throw .guestMemory(while: "copying ELF segment \(segment.index) to \(address)", error)
            }
        }
        let start = elf.loadSegments.map(\.physicalAddress).min()!
        let end = elf.loadSegments.map { $0.physicalAddress + $0.memorySize }.max()!
        return KernelLoadResult(entry: GuestAddress(elf.entry), pvhEntry: pvhEntry.map { GuestAddress($0) },
                                loadStart: GuestAddress(start), loadEnd: GuestAddress(end), setupHeader: nil)
    }
}
