import GuestMemory

/// The 64-byte header at the start of an arm64 Linux `Image` (`Documentation/arch/arm64/booting.rst`).
///
/// ```text
/// 0   code0, code1   executable code ("MZ" in code0 when the Image is also an EFI PE file)
/// 8   text_offset    offset of the load address from a 2 MiB-aligned base (little-endian u64)
/// 16  image_size     bytes the kernel occupies from there, BSS included (0 before Linux 3.17)
/// 24  flags          bit 0 big-endian, bits 1-2 page size, bit 3 "anywhere in RAM"
/// 32  res2, res3, res4
/// 56  magic          0x644d5241, "ARM\x64"
/// 60  res5           offset of the PE header, 0 without an EFI stub
/// ```
public struct ARM64ImageHeader: Hashable, Sendable {
    /// The kernel page size that bits 1-2 of `flags` announce.
    public enum PageSize: UInt8, Hashable, Sendable {
        /// 0: not given (kernels before 3.17 leave the flags 0).
        case unspecified = 0
        /// 1: 4 KiB pages.
        case size4K = 1
        /// 2: 16 KiB pages.
        case size16K = 2
        /// 3: 64 KiB pages.
        case size64K = 3
    }

    /// The Image magic at byte 56: "ARM\x64" read little-endian.
    public static let magic: UInt32 = 0x644D_5241
    /// The header's size in bytes.
    public static let size = 64
    /// The alignment of the base the Image is loaded `textOffset` bytes above.
    public static let baseAlignment: UInt64 = 2 << 20
    /// The `text_offset` booting.rst says to assume when `image_size` is 0 (old kernels).
    public static let legacyTextOffset: UInt64 = 0x8_0000

    /// Offset of the load address above a 2 MiB-aligned base.
    public var textOffset: UInt64
    /// Bytes the kernel occupies from its load address (BSS included); 0 on pre-3.17 kernels.
    public var imageSize: UInt64
    /// The raw `flags` field.
    public var flags: UInt64
    /// Offset of the PE header when the Image carries an EFI stub (`res5`), else 0.
    public var peHeaderOffset: UInt32

    /// The page size bits 1-2 of `flags` announce.
    public var pageSize: PageSize { PageSize(rawValue: UInt8((flags >> 1) & 3))! }
    /// Bit 3 of `flags`: the 2 MiB-aligned base may be anywhere in RAM (else as low as possible).
    public var placeAnywhere: Bool { flags & 8 != 0 }
    /// Bit 0 of `flags`: the kernel is big-endian.
    public var isBigEndian: Bool { flags & 1 != 0 }
}

/// What loading an arm64 `Image` put where.
public struct ARM64KernelLoad: Hashable, Sendable {
    /// The entry point: the first byte of the Image (the vCPU's PC at boot).
    public var entry: GuestAddress
    /// The first guest address after the kernel's `image_size` (or its file, if larger).
    public var loadEnd: GuestAddress
    /// The parsed header.
    public var header: ARM64ImageHeader
}

/// Loads an arm64 Linux `Image` (linux-loader's `PE` loader; the arm64 boot protocol).
public enum ARM64ImageLoader {
    /// Parses and checks the header of `image` without touching guest memory.
    ///
    /// - Throws: `.imageTruncated` for fewer than 64 bytes or a PE header offset beyond the
    ///   file, `.imageBadMagic`, `.imageBigEndian`, `.imageMalformed` for an `image_size`
    ///   smaller than the file or a `text_offset` that breaks the 2 MiB placement.
    public static func parse(_ image: [UInt8]) throws(AArch64Error) -> ARM64ImageHeader {
        guard image.count >= ARM64ImageHeader.size,
              let textOffset = image.loadLittleEndian(UInt64.self, at: 8),
              let imageSize = image.loadLittleEndian(UInt64.self, at: 16),
              let flags = image.loadLittleEndian(UInt64.self, at: 24),
              let magic = image.loadLittleEndian(UInt32.self, at: 56),
              let peOffset = image.loadLittleEndian(UInt32.self, at: 60)
        else { throw .imageTruncated(fileSize: image.count) }
        guard magic == ARM64ImageHeader.magic else { throw .imageBadMagic(found: magic) }
        var header = ARM64ImageHeader(textOffset: textOffset, imageSize: imageSize, flags: flags, peHeaderOffset: peOffset)
        guard !header.isBigEndian else { throw .imageBigEndian }
        if imageSize == 0 {
            // booting.rst: with image_size 0, assume text_offset 0x80000 whatever the field says.
            header.textOffset = ARM64ImageHeader.legacyTextOffset
        } else if imageSize < UInt64(image.count) {
            throw .imageMalformed(reason: "image_size \(hex(imageSize)) is smaller than the file's \(hex(image.count)) bytes")
        }
        guard header.textOffset < ARM64ImageHeader.baseAlignment, header.textOffset.isMultiple(of: 4096) else {
            throw .imageMalformed(reason: "text_offset \(hex(header.textOffset)) is not a page-aligned offset inside the 2 MiB block")
        }
        if peOffset != 0 {
            // An EFI stub: "MZ" in code0 and "PE\0\0" where res5 points.
            guard image[0] == 0x4D, image[1] == 0x5A else {
                throw .imageMalformed(reason: "res5 gives a PE header offset \(hex(peOffset)) but code0 does not start with \"MZ\"")
            }
            guard let signature = image.loadLittleEndian(UInt32.self, at: Int(peOffset)) else {
                throw .imageTruncated(fileSize: image.count)
            }
            guard signature == 0x0000_4550 else {
                throw .imageMalformed(reason: "the PE header at \(hex(peOffset)) starts with \(hex(signature)) instead of \"PE\\0\\0\"")
            }
        }
        return header
    }

    /// Copies `image` into guest memory `textOffset` bytes above `base` (2 MiB-aligned,
    /// `AArch64Layout.kernelStart` by default) and returns the entry point.
    ///
    /// - Throws: what `parse` throws; `.imageBadLoadAddress` for a misaligned base;
    ///   `.imageOutsideRAM` when RAM does not back `image_size` bytes from the load address.
    ///   Nothing is written then.
    public static func load(_ image: [UInt8], into memory: GuestMemory,
                            base: GuestAddress = AArch64Layout.kernelStart) throws(AArch64Error) -> ARM64KernelLoad {
        let header = try parse(image)
        guard base.rawValue.isMultiple(of: ARM64ImageHeader.baseAlignment) else {
            throw .imageBadLoadAddress(address: base.rawValue, reason: "the base must be 2 MiB-aligned")
        }
        let start = base.rawValue + header.textOffset
        let length = max(header.imageSize, UInt64(image.count))
        let (end, overflow) = start.addingReportingOverflow(length)
        guard !overflow, let count = Int(exactly: length) else {
            throw .imageBadLoadAddress(address: base.rawValue, reason: "image_size \(hex(header.imageSize)) passes the 64-bit limit from there")
        }
        do {
            try memory.checkRange(GuestAddress(start), length: count, writing: true)
        } catch {
            throw .imageOutsideRAM(start: start, end: end, cause: error)
        }
        do {
            try memory.write(bytes: image, at: GuestAddress(start))
        } catch {
            throw .imageOutsideRAM(start: start, end: end, cause: error)
        }
        return ARM64KernelLoad(entry: GuestAddress(start), loadEnd: GuestAddress(end), header: header)
    }
}
