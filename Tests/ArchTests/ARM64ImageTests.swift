import Testing
import FoundationEssentials
import GuestMemory
@testable import Arch

/// A hand-made Image: the 64-byte header then `payload` bytes.
func makeARM64Image(textOffset: UInt64 = 0, imageSize: UInt64 = 0x10000, flags: UInt64 = 0xA,
                    magic: UInt32 = ARM64ImageHeader.magic, peOffset: UInt32 = 0, fileSize: Int = 0x1000) -> [UInt8] {
    var buffer = LittleEndianBuffer(size: fileSize)
    buffer.put(UInt32(0x1400_0010), at: 0) // b #0x40
    buffer.put(textOffset, at: 8)
    buffer.put(imageSize, at: 16)
    buffer.put(flags, at: 24)
    buffer.put(magic, at: 56)
    buffer.put(peOffset, at: 60)
    for index in 64..<fileSize { buffer.put(UInt8(truncatingIfNeeded: index), at: index) }
    return buffer.bytes
}

@Suite("arm64 Image loader")
struct ARM64ImageTests {
    @Test func parsesTheHeaderFields() throws {
        let header = try ARM64ImageLoader.parse(makeARM64Image(textOffset: 0x8_0000, imageSize: 0x2010000, flags: 0xA))
        #expect(header.textOffset == 0x8_0000 && header.imageSize == 0x2010000)
        #expect(header.pageSize == .size4K && header.placeAnywhere && !header.isBigEndian)
        let plain = try ARM64ImageLoader.parse(makeARM64Image(flags: 0x6))
        #expect(plain.pageSize == .size64K && !plain.placeAnywhere)
    }

    @Test func oldKernelsGetTheLegacyTextOffset() throws {
        let header = try ARM64ImageLoader.parse(makeARM64Image(textOffset: 0, imageSize: 0, flags: 0))
        #expect(header.textOffset == 0x8_0000 && header.pageSize == .unspecified)
    }

    @Test func refusesMalformedImages() {
        #expect(throws: AArch64Error.imageTruncated(fileSize: 63)) {
            try ARM64ImageLoader.parse(Array(makeARM64Image().prefix(63)))
        }
        #expect(throws: AArch64Error.imageTruncated(fileSize: 0)) { try ARM64ImageLoader.parse([]) }
        #expect(throws: AArch64Error.imageBadMagic(found: 0x644D_5242)) {
            try ARM64ImageLoader.parse(makeARM64Image(magic: 0x644D_5242))
        }
        #expect(throws: AArch64Error.imageBigEndian) { try ARM64ImageLoader.parse(makeARM64Image(flags: 0xB)) }
        #expect(throws: AArch64Error.self) { try ARM64ImageLoader.parse(makeARM64Image(imageSize: 0x800)) }
        #expect(throws: AArch64Error.self) { try ARM64ImageLoader.parse(makeARM64Image(textOffset: 0x20_0000)) }
        #expect(throws: AArch64Error.self) { try ARM64ImageLoader.parse(makeARM64Image(textOffset: 0x123)) }
        // A PE offset needs "MZ" in code0 and "PE\0\0" inside the file.
        #expect(throws: AArch64Error.self) { try ARM64ImageLoader.parse(makeARM64Image(peOffset: 0x40)) }
        var efi = makeARM64Image(peOffset: 0x2000)
        efi[0] = 0x4D; efi[1] = 0x5A
        #expect(throws: AArch64Error.imageTruncated(fileSize: 0x1000)) { try ARM64ImageLoader.parse(efi) }
        var pe = makeARM64Image(peOffset: 0x40)
        pe[0] = 0x4D; pe[1] = 0x5A
        #expect(throws: AArch64Error.self) { try ARM64ImageLoader.parse(pe) }
        pe.replaceSubrange(0x40..<0x44, with: [0x50, 0x45, 0, 0])
        #expect((try? ARM64ImageLoader.parse(pe)) != nil)
    }

    @Test func errorsNameTheirNumbers() {
        #expect(AArch64Error.imageBadMagic(found: 0x1234).description.contains("0x1234"))
        #expect(AArch64Error.imageTruncated(fileSize: 12).description.contains("12 bytes"))
    }

    @Test func loadsAtTheTextOffsetAboveTheBase() throws {
        let memory = try GuestMemory.anonymous([(start: AArch64Layout.ramStart, size: 64 << 20)], options: [.noReserve])
        let image = makeARM64Image(textOffset: 0x8_0000, imageSize: 0x10000)
        let result = try ARM64ImageLoader.load(image, into: memory)
        #expect(result.entry.rawValue == AArch64Layout.kernelStart.rawValue + 0x8_0000)
        #expect(result.loadEnd.rawValue == result.entry.rawValue + 0x10000)
        #expect(try memory.readBytes(count: image.count, at: result.entry) == image)
        #expect(throws: AArch64Error.self) {
            try ARM64ImageLoader.load(image, into: memory, base: GuestAddress(AArch64Layout.kernelStart.rawValue + 0x1000))
        }
        let huge = makeARM64Image(imageSize: 128 << 20)
        do {
            _ = try ARM64ImageLoader.load(huge, into: memory)
            Issue.record("a kernel larger than RAM loaded")
        } catch {
            guard case .imageOutsideRAM = error else { Issue.record("unexpected \(error)"); return }
        }
    }

    static let realImagePath = (ProcessInfo.processInfo.environment["XDG_CACHE_HOME"]
        ?? ((ProcessInfo.processInfo.environment["HOME"] ?? "/root") + "/.cache")) + "/cloud-hypervisor-swift/arm64/Image"

    /// `CH_REQUIRE_REAL_KERNEL=1` (set by .ci/run, whose test command fetches the Image) makes a
    /// missing Image a failure instead of a skip.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: realImagePath)
                       || ProcessInfo.processInfo.environment["CH_REQUIRE_REAL_KERNEL"] == "1",
                   "no Debian arm64 Image in the cache (run Scripts/fetch-arm64-kernel.sh)"))
    func debianArm64ImageLoads() throws {
        let image = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.realImagePath)))
        let header = try ARM64ImageLoader.parse(image)
        #expect(header.textOffset == 0 && header.imageSize >= UInt64(image.count))
        #expect(header.pageSize == .size4K && header.placeAnywhere)
        #expect(header.peHeaderOffset != 0 && image[0] == 0x4D && image[1] == 0x5A)
        let memory = try GuestMemory.anonymous([(start: AArch64Layout.ramStart, size: 256 << 20)], options: [.noReserve])
        let result = try ARM64ImageLoader.load(image, into: memory)
        #expect(result.entry == AArch64Layout.kernelStart)
        #expect(try memory.readBytes(count: 64, at: result.entry) == Array(image[0..<64]))
        // Corruptions of the real header are refused.
        var corrupted = image
        corrupted[56] ^= 0xFF
        #expect(throws: AArch64Error.self) { try ARM64ImageLoader.parse(corrupted) }
        #expect(throws: AArch64Error.self) { try ARM64ImageLoader.parse(Array(image.prefix(40))) }
    }
}
