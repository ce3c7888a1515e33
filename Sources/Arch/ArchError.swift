import GuestMemory

/// Why planning guest memory, loading a kernel or building a boot structure failed.
///
/// Each case carries the numbers involved, and `description` is one sentence that names
/// them (addresses and file offsets in hexadecimal), so a log line alone says what was wrong
/// with which input.
public enum ArchError: Error, Equatable, Sendable, CustomStringConvertible {
    // MARK: Memory layout

    /// A RAM size of 0, or one whose top would pass the 64-bit address space.
    case invalidRAMSize(UInt64)
    /// The first RAM region `[start, end)` does not start at 0 and run past 1 MiB and stay
    /// below the 32-bit hole, as the E820 map needs.
    case unexpectedRAMLayout(start: UInt64, end: UInt64)
    /// More memory-map entries than `boot_params` holds.
    case tooManyE820Entries(count: Int, max: Int)
    /// Two boot structures (named) would share bytes.
    case bootStructuresOverlap(first: String, second: String)
    /// A guest memory access failed while doing what the string says.
    case guestMemory(while: String, GuestMemoryError)

    // MARK: Command line

    /// A command-line size limit below 1 byte.
    case invalidCommandLineMaxSize(Int)
    /// The command line has a NUL byte at this byte position.
    case commandLineContainsNUL(position: Int)
    /// The command line needs `size` bytes with its NUL, more than `maxSize`.
    case commandLineTooLong(size: Int, maxSize: Int)

    // MARK: ELF

    /// The file ends before the end of `what` (at byte `end`).
    case elfTruncated(what: String, end: UInt64, fileSize: Int)
    /// The first four bytes are not 0x7F 'E' 'L' 'F'.
    case elfBadMagic([UInt8])
    /// `EI_CLASS` is not 2 (64-bit).
    case elfNot64Bit(elfClass: UInt8)
    /// `EI_DATA` is not 1 (little-endian).
    case elfNotLittleEndian(dataEncoding: UInt8)
    /// `EI_VERSION` or `e_version` is not 1.
    case elfBadVersion(UInt32)
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN`.
    case elfNotExecutable(fileType: UInt16)
    /// `e_machine` is not the one the loader handles.
    case elfWrongMachine(found: UInt16, expected: UInt16)
    /// `e_phentsize` is not 56.
    case elfBadProgramHeaderSize(UInt16)
    /// `e_phoff` points into the ELF header.
    case elfBadProgramHeaderOffset(UInt64)
    /// No `PT_LOAD` segment.
    case elfNoLoadableSegments
    /// A segment's file range lies (partly) outside the file.
    case elfSegmentOutsideFile(index: Int, offset: UInt64, size: UInt64, fileSize: Int)
    /// A segment's start plus size passes 2^64 (`what` says which range).
    case elfSegmentOverflow(index: Int, what: String, start: UInt64, size: UInt64)
    /// A segment has more file bytes than memory bytes.
    case elfSegmentFileSizeExceedsMemorySize(index: Int, fileSize: UInt64, memorySize: UInt64)
    /// A segment would load below the lowest address allowed.
    case elfSegmentBelowLowestAddress(index: Int, address: UInt64, lowest: UInt64)
    /// Guest RAM does not back a segment's memory range.
    case elfSegmentOutsideRAM(index: Int, address: UInt64, size: UInt64, cause: GuestMemoryError)
    /// A note in a `PT_NOTE` segment is malformed.
    case elfMalformedNote(segment: Int, offset: Int, reason: String)
    /// The Xen `PHYS32_ENTRY` note cannot be used.
    case pvhEntryInvalid(reason: String)

    // MARK: bzImage

    /// The file ends before the end of `what` (at byte `end`).
    case bzImageTruncated(what: String, end: UInt64, fileSize: Int)
    /// No "HdrS" at offset 0x202: not a bzImage (or a protocol older than 2.00).
    case bzImageMissingHeaderMagic(found: UInt32)
    /// The boot protocol version is older than the loader needs.
    case bzImageProtocolTooOld(version: UInt16, minimum: UInt16)
    /// `boot_flag` is not 0xAA55.
    case bzImageBadBootFlag(found: UInt16)
    /// `loadflags` lacks `LOADED_HIGH`: the kernel wants to be loaded at 0x10000.
    case bzImageNotLoadedHigh
    /// `xloadflags` lacks `XLF_KERNEL_64`: there is no 64-bit entry point.
    case bzImageNo64BitEntry
    /// The requested load address cannot be used, for the reason given.
    case bzImageBadLoadAddress(address: UInt64, reason: String)
    /// Guest RAM does not back the kernel's range `[start, end)`.
    case kernelOutsideRAM(start: UInt64, end: UInt64, cause: GuestMemoryError)
    /// A setup header for `boot_params` is unusable, for the reason given.
    case invalidSetupHeader(reason: String)

    // MARK: Initramfs

    /// No page-aligned address at or above `lowest` lets `size` bytes end at or below `limit`.
    case initramfsDoesNotFit(size: UInt64, limit: UInt64, lowest: UInt64)

    // MARK: CPU

    /// The CPU topology is unusable, for the reason given.
    case invalidTopology(reason: String)
    /// A vCPU index at or past the vCPU count.
    case vcpuIDOutOfRange(id: UInt32, count: UInt32)
    /// A CPUID brand string longer than 47 bytes or with a NUL byte.
    case invalidBrandString(String)

    // MARK: MP table

    /// The MP table cannot describe this many vCPUs (or their APIC IDs).
    case tooManyCPUsForMPTable(count: Int, max: Int)
    /// The MP table (`size` bytes at `address`) would pass `limit`.
    case mpTableDoesNotFit(size: Int, address: UInt64, limit: UInt64)
    /// No room for the 64-bit device area between `start` (the end of RAM and its hotplug
    /// room) and `end` (the top of a `bits`-bit guest-physical address space).
    case noDeviceArea(start: UInt64, end: UInt64, bits: UInt8)

    /// One sentence explaining the failure with its numbers.
    public var description: String {
        switch self {
        case let .invalidRAMSize(size):
            return "guest RAM size \(size) bytes (\(hex(size))) is unusable: it must be above 0 and its top must fit in 64 bits"
        case let .unexpectedRAMLayout(start, end):
            return "the first guest RAM region [\(hex(start)), \(hex(end))) must start at 0, extend past 1 MiB "
                + "and end at or below the 32-bit hole at 0xc0000000 for the E820 map"
        case let .tooManyE820Entries(count, max):
            return "the memory map has \(count) entries but boot_params holds at most \(max)"
        case let .bootStructuresOverlap(first, second):
            return "\(first) and \(second) would overlap in guest memory"
        case let .guestMemory(action, error):
            return "\(action) failed: \(error)"
        case let .invalidCommandLineMaxSize(size):
            return "a kernel command line limit of \(size) bytes is unusable: it must be at least 1 byte (the NUL)"
        case let .commandLineContainsNUL(position):
            return "the kernel command line has a NUL byte at byte \(position); the guest would cut it there"
        case let .commandLineTooLong(size, maxSize):
            return "the kernel command line needs \(size) bytes with its terminating NUL but at most \(maxSize) are allowed"
        case let .elfTruncated(what, end, fileSize):
            return "the kernel image is truncated: \(what) ends at byte \(hex(end)) but the file has \(hex(fileSize)) bytes"
        case let .elfBadMagic(bytes):
            return "the kernel image is not an ELF file: it starts with \(bytes.map { hex($0) }.joined(separator: " ")) "
                + "instead of 0x7f 'E' 'L' 'F'"
        case let .elfNot64Bit(elfClass):
            return "the ELF kernel has class \(elfClass) (\(elfClass == 1 ? "32-bit" : "unknown")); only 64-bit (class 2) ELF is supported"
        case let .elfNotLittleEndian(encoding):
            return "the ELF kernel has data encoding \(encoding) (\(encoding == 2 ? "big-endian" : "unknown")); only little-endian (1) is supported"
        case let .elfBadVersion(version):
            return "the ELF kernel has version \(version); only version 1 exists"
        case let .elfNotExecutable(fileType):
            return "the ELF file has type \(fileType); a kernel must be an executable (2) or position-independent executable (3)"
        case let .elfWrongMachine(found, expected):
            return "the ELF kernel is built for machine \(found) but this loader needs machine \(expected)"
                + (expected == ELFImage.machineX86_64 ? " (EM_X86_64)" : "")
        case let .elfBadProgramHeaderSize(size):
            return "the ELF kernel's program headers are \(size) bytes each instead of the 56 of ELF64"
        case let .elfBadProgramHeaderOffset(offset):
            return "the ELF kernel's program header table at \(hex(offset)) overlaps the 64-byte ELF header"
        case .elfNoLoadableSegments:
            return "the ELF kernel has no loadable (PT_LOAD) segment"
        case let .elfSegmentOutsideFile(index, offset, size, fileSize):
            return "the kernel image is truncated: program header \(index) describes \(hex(size)) bytes at file offset "
                + "\(hex(offset)) but the file has \(hex(fileSize)) bytes"
        case let .elfSegmentOverflow(index, what, start, size):
            return "ELF program header \(index) is malformed: its \(what) of \(hex(size)) bytes from \(hex(start)) passes the 64-bit limit"
        case let .elfSegmentFileSizeExceedsMemorySize(index, fileSize, memorySize):
            return "ELF program header \(index) is malformed: it has \(hex(fileSize)) file bytes but only \(hex(memorySize)) bytes in memory"
        case let .elfSegmentBelowLowestAddress(index, address, lowest):
            return "ELF segment \(index) would load at \(hex(address)), below \(hex(lowest)) where the boot structures live"
        case let .elfSegmentOutsideRAM(index, address, size, cause):
            return "ELF segment \(index) (\(hex(size)) bytes at \(hex(address))) does not fit in guest RAM: \(cause)"
        case let .elfMalformedNote(segment, offset, reason):
            return "the ELF note at byte \(hex(offset)) of note segment \(segment) is malformed: \(reason)"
        case let .pvhEntryInvalid(reason):
            return "the kernel's PVH entry note (Xen XEN_ELFNOTE_PHYS32_ENTRY) is unusable: \(reason)"
        case let .bzImageTruncated(what, end, fileSize):
            return "the kernel image is truncated: \(what) ends at byte \(hex(end)) but the file has \(hex(fileSize)) bytes"
        case let .bzImageMissingHeaderMagic(found):
            return "the kernel image is not a bzImage: offset 0x202 holds \(hex(found)) instead of \"HdrS\" (0x53726448)"
        case let .bzImageProtocolTooOld(version, minimum):
            return "the bzImage uses boot protocol \(Self.protocolString(version)), but the 64-bit entry needs "
                + "\(Self.protocolString(minimum)) or later"
        case let .bzImageBadBootFlag(found):
            return "the bzImage's boot_flag is \(hex(found)) instead of 0xaa55"
        case .bzImageNotLoadedHigh:
            return "the bzImage does not set LOADED_HIGH in loadflags: it is a zImage for 0x10000, which is not supported"
        case .bzImageNo64BitEntry:
            return "the bzImage does not set XLF_KERNEL_64 in xloadflags: it has no 64-bit entry point"
        case let .bzImageBadLoadAddress(address, reason):
            return "the bzImage cannot be loaded at \(hex(address)): \(reason)"
        case let .kernelOutsideRAM(start, end, cause):
            return "the kernel needs guest RAM over [\(hex(start)), \(hex(end))) (its image and init_size), but: \(cause)"
        case let .invalidSetupHeader(reason):
            return "the setup header for boot_params is unusable: \(reason)"
        case let .initramfsDoesNotFit(size, limit, lowest):
            return "an initramfs of \(size) bytes (\(hex(size))) does not fit between \(hex(lowest)) and \(hex(limit)) "
                + "(RAM below 4 GiB and the kernel's initrd_addr_max)"
        case let .invalidTopology(reason):
            return "the CPU topology is unusable: \(reason)"
        case let .vcpuIDOutOfRange(id, count):
            return "vCPU \(id) does not exist in a VM with \(count) vCPUs"
        case let .invalidBrandString(brand):
            return "the CPUID brand string \"\(brand)\" must be at most 47 bytes without NUL bytes"
        case let .tooManyCPUsForMPTable(count, max):
            return "an MP table describes 1 to \(max) vCPUs with APIC IDs below 0xff, but \(count) vCPUs were asked for"
                + " (or their topology needs larger APIC IDs)"
        case let .mpTableDoesNotFit(size, address, limit):
            return "the MP table needs \(size) bytes at \(hex(address)) but only \(limit > address ? Int(limit - address) : 0) "
                + "bytes fit below \(hex(limit))"
        case let .noDeviceArea(start, end, bits):
            return "no room for the 64-bit PCI device area: it would start at \(hex(start)), after RAM and its hotplug room, "
                + "but a \(bits)-bit guest-physical address space leaves it only up to \(hex(end))"
        }
    }

    /// "2.12" for 0x020C (the minor version is printed with two digits).
    static func protocolString(_ version: UInt16) -> String {
        let minor = version & 0xFF
        return "\(version >> 8).\(minor < 10 ? "0" : "")\(minor)"
    }
}
