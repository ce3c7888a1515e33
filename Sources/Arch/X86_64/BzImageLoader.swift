import GuestMemory

/// A bzImage whose setup header has been checked: where its protected-mode kernel starts
/// in the file and how large it is.
public struct BzImage: Hashable, Sendable {
    /// The setup header as found in the image.
    public var header: SetupHeader
    /// The size of the real-mode setup code in the file: `(setup_sects + 1) * 512`, with
    /// `setup_sects` 0 read as 4. The protected-mode kernel starts at this offset.
    public var setupSize: Int
    /// The size of the protected-mode kernel (the rest of the file).
    public var kernelSize: Int
}

/// Loads a Linux bzImage by the x86 boot protocol for a 64-bit entry, as linux-loader does
/// for Cloud Hypervisor: the protected-mode kernel (everything after the setup sectors) is
/// copied to its load address, 0x100000 by default (the header's `code32_start`), and the
/// VMM enters it at load address + 0x200 (`startup_64`) in long mode with `rsi` pointing at
/// the zero page.
///
/// The image must carry boot protocol 2.12 or later: from 2.12 on, `xloadflags` bit 0 says
/// that the 64-bit entry exists, which is the only entry this loader uses.
public enum BzImageLoader {
    /// The oldest boot protocol accepted (2.12).
    public static let minimumProtocolVersion: UInt16 = 0x020C
    /// The 64-bit entry's offset from the load address.
    public static let entryOffset64: UInt64 = 0x200

    /// Checks the setup header of `image` without touching guest memory.
    ///
    /// - Throws: `.bzImageTruncated` when the file ends inside the header, the setup code or
    ///   the kernel `syssize` announces; `.bzImageMissingHeaderMagic` without "HdrS" at 0x202;
    ///   `.bzImageBadBootFlag`; `.bzImageProtocolTooOld`; `.bzImageNotLoadedHigh`;
    ///   `.bzImageNo64BitEntry`.
    public static func parse(_ image: [UInt8]) throws(ArchError) -> BzImage {
        guard let magic = image.loadLittleEndian(UInt32.self, at: 0x202) else {
            throw .bzImageTruncated(what: "the setup header's \"HdrS\" magic", end: 0x206, fileSize: image.count)
        }
        guard magic == SetupHeader.headerMagic else { throw .bzImageMissingHeaderMagic(found: magic) }
        guard let version = image.loadLittleEndian(UInt16.self, at: 0x206) else {
            throw .bzImageTruncated(what: "the setup header's version", end: 0x208, fileSize: image.count)
        }
        guard version >= minimumProtocolVersion else {
            throw .bzImageProtocolTooOld(version: version, minimum: minimumProtocolVersion)
        }
        guard image.count >= SetupHeader.endOffset else {
            throw .bzImageTruncated(what: "the setup header", end: UInt64(SetupHeader.endOffset), fileSize: image.count)
        }
        let header = SetupHeader(unchecked: Array(image[SetupHeader.startOffset..<SetupHeader.endOffset]))
        guard header.bootFlag == SetupHeader.bootFlagMagic else { throw .bzImageBadBootFlag(found: header.bootFlag) }
        guard header.loadFlags & SetupHeader.loadedHigh != 0 else { throw .bzImageNotLoadedHigh }
        guard header.xLoadFlags & SetupHeader.xlfKernel64 != 0 else { throw .bzImageNo64BitEntry }

        let sectors = header.setupSectors == 0 ? 4 : Int(header.setupSectors)
        let setupSize = (sectors + 1) * 512
        guard image.count > setupSize else {
            throw .bzImageTruncated(what: "the setup code (\(sectors) sectors after the boot sector)",
                                    end: UInt64(setupSize), fileSize: image.count)
        }
        let kernelSize = image.count - setupSize
        // syssize counts 16-byte paragraphs, rounded up: a kernel more than one paragraph
        // shorter than announced was cut off.
        let announced = UInt64(header.sysSize) * 16
        guard UInt64(kernelSize) + 16 > announced else {
            throw .bzImageTruncated(what: "the protected-mode kernel (syssize \(hex(announced)) bytes)",
                                    end: UInt64(setupSize) + announced, fileSize: image.count)
        }
        return BzImage(header: header, setupSize: setupSize, kernelSize: kernelSize)
    }

    /// Loads `image` into `memory`.
    ///
    /// - Parameter loadAddress: where to put the protected-mode kernel; `nil` (the default,
    ///   what Cloud Hypervisor does) takes the header's `code32_start`, 0x100000. Another
    ///   address needs a relocatable kernel and `kernel_alignment`.
    /// - Returns: the 64-bit entry (load address + 0x200), the load range (its end covers
    ///   `init_size` from the address the kernel will run at), and the setup header with
    ///   `code32_start` set to the load address, for `BootParams`.
    /// - Throws: the `parse` errors; `.bzImageBadLoadAddress` for an address below 1 MiB,
    ///   not allowed for this kernel or misaligned; `.kernelOutsideRAM` when RAM does not
    ///   back the kernel or the memory it needs to decompress. Nothing is written then.
    public static func load(_ image: [UInt8], into memory: GuestMemory,
                            loadAddress: GuestAddress? = nil) throws(ArchError) -> KernelLoadResult {
        let bzImage = try parse(image)
        var header = bzImage.header
        let address = loadAddress ?? GuestAddress(UInt64(header.code32Start))
        guard address >= X86Layout.highRAMStart, address.rawValue <= UInt64(UInt32.max) else {
            throw .bzImageBadLoadAddress(address: address.rawValue, reason: "it must lie between 1 MiB and 4 GiB")
        }
        let relocatable = header.relocatableKernel != 0
        if address.rawValue != UInt64(header.code32Start) {
            guard relocatable else {
                throw .bzImageBadLoadAddress(address: address.rawValue,
                                             reason: "the kernel is not relocatable and must load at \(hex(header.code32Start))")
            }
            let alignment = UInt64(max(header.kernelAlignment, 1))
            guard address.rawValue.isMultiple(of: alignment) else {
                throw .bzImageBadLoadAddress(address: address.rawValue,
                                             reason: "the kernel needs an alignment of \(hex(alignment))")
            }
        }
        // The decompressor runs the kernel at the load address rounded up to its alignment
        // but never below pref_address (LOAD_PHYSICAL_ADDR); non-relocatable kernels run at
        // pref_address. It needs init_size bytes from there.
        let runAddress: UInt64
        if relocatable {
            let alignment = UInt64(max(header.kernelAlignment, 1))
            let aligned = (address.rawValue + alignment - 1) / alignment * alignment
            runAddress = max(aligned, header.preferredAddress)
        } else {
            runAddress = max(address.rawValue, header.preferredAddress)
        }
        let copyEnd = address.rawValue + UInt64(bzImage.kernelSize)
        let (initEnd, overflow) = runAddress.addingReportingOverflow(UInt64(header.initSize))
        guard !overflow else {
            throw .bzImageBadLoadAddress(address: runAddress, reason: "init_size \(hex(header.initSize)) overflows from there")
        }
        let end = max(copyEnd, initEnd)
        // A pref_address near the top of the address space puts the end beyond any length.
        guard let length = Int(exactly: end - address.rawValue) else {
            throw .bzImageBadLoadAddress(address: runAddress, reason: "init_size from there ends at \(hex(end)), past any guest RAM")
        }
        do {
            try memory.checkRange(address, length: length, writing: true)
        } catch {
            throw .kernelOutsideRAM(start: address.rawValue, end: end, cause: error)
        }
        do {
            try memory.write(bytes: image[bzImage.setupSize...], at: address)
        } catch {
            throw .guestMemory(while: "copying the bzImage's protected-mode kernel to \(address)", error)
        }
        header.code32Start = UInt32(address.rawValue)
        return KernelLoadResult(entry: GuestAddress(address.rawValue + entryOffset64), pvhEntry: nil,
                                loadStart: address, loadEnd: GuestAddress(end), setupHeader: header)
    }
}
