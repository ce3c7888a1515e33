import Testing
import GuestMemory
@testable import Arch

@Suite("bzImage loader")
struct BzImageTests {
    @Test func parsesTheSetupHeader() throws {
        let bzImage = try BzImageLoader.parse(TestBzImage().build())
        #expect(bzImage.setupSize == 1024)
        #expect(bzImage.kernelSize == 0x3000)
        #expect(bzImage.header.version == 0x020F)
        #expect(bzImage.header.code32Start == 0x100000)
        #expect(bzImage.header.initrdAddressMax == 0x7FFF_FFFF)
        #expect(bzImage.header.commandLineSize == 2047)
        #expect(bzImage.header.bytes.count == 0x7B)
    }

    @Test func zeroSetupSectorsMeansFour() throws {
        var image = TestBzImage()
        image.setupSectors = 0
        #expect(try BzImageLoader.parse(image.build()).setupSize == 5 * 512)
    }

    @Test func loadsTheProtectedModeKernelAtOneMiB() throws {
        var image = TestBzImage()
        image.payload = (0..<0x3000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let memory = try makeRAM()
        let result = try BzImageLoader.load(image.build(), into: memory)
        #expect(result.loadStart == GuestAddress(0x100000))
        #expect(result.entry == GuestAddress(0x100200))
        #expect(result.pvhEntry == nil)
        // Relocatable, aligned up to 2 MiB to run: init_size counts from 0x200000.
        #expect(result.loadEnd == GuestAddress(0x210000))
        #expect(try memory.readBytes(count: 0x3000, at: GuestAddress(0x100000)) == image.payload)
        #expect(result.setupHeader?.code32Start == 0x100000)
    }

    @Test func relocatesOnlyWhenAllowed() throws {
        let memory = try makeRAM()
        let result = try BzImageLoader.load(TestBzImage().build(), into: memory, loadAddress: GuestAddress(0x400000))
        #expect(result.entry == GuestAddress(0x400200))
        #expect(result.setupHeader?.code32Start == 0x400000)
        #expect(throws: ArchError.bzImageBadLoadAddress(address: 0x401000, reason: "the kernel needs an alignment of 0x200000")) {
            _ = try BzImageLoader.load(TestBzImage().build(), into: memory, loadAddress: GuestAddress(0x401000))
        }
        var fixed = TestBzImage()
        fixed.relocatable = 0
        let error = #expect(throws: ArchError.self) {
            _ = try BzImageLoader.load(fixed.build(), into: memory, loadAddress: GuestAddress(0x400000))
        }
        guard case .bzImageBadLoadAddress(0x400000, _)? = error else { Issue.record("unexpected \(String(describing: error))"); return }
    }

    @Test func refusesImagesWithoutHdrS() throws {
        var image = TestBzImage()
        image.magic = 0x1234_5678
        let error = #expect(throws: ArchError.self) { _ = try BzImageLoader.parse(image.build()) }
        #expect(error == .bzImageMissingHeaderMagic(found: 0x1234_5678))
        #expect(error?.description.contains("HdrS") == true)
        // An ELF file handed to the bzImage loader fails the same way.
        let elf = TestELF(segments: [.init(bytes: Array(repeating: 1, count: 0x300))]).build()
        let elfError = #expect(throws: ArchError.self) { _ = try BzImageLoader.parse(elf) }
        guard case .bzImageMissingHeaderMagic? = elfError else { Issue.record("unexpected \(String(describing: elfError))"); return }
    }

    @Test func refusesOldProtocolsAndMissingFlags() throws {
        var image = TestBzImage()
        image.version = 0x0206
        let error = #expect(throws: ArchError.self) { _ = try BzImageLoader.parse(image.build()) }
        #expect(error == .bzImageProtocolTooOld(version: 0x0206, minimum: 0x020C))
        #expect(error?.description.contains("2.06") == true && error?.description.contains("2.12") == true)

        image = TestBzImage()
        image.loadFlags = 0
        #expect(throws: ArchError.bzImageNotLoadedHigh) { _ = try BzImageLoader.parse(image.build()) }
        image = TestBzImage()
        image.xLoadFlags = 0
        #expect(throws: ArchError.bzImageNo64BitEntry) { _ = try BzImageLoader.parse(image.build()) }
        image = TestBzImage()
        image.bootFlag = 0
        #expect(throws: ArchError.bzImageBadBootFlag(found: 0)) { _ = try BzImageLoader.parse(image.build()) }
    }

    @Test func refusesTruncatedImages() throws {
        let full = TestBzImage().build()
        #expect(throws: ArchError.bzImageTruncated(what: "the setup header's \"HdrS\" magic", end: 0x206, fileSize: 0x100)) {
            _ = try BzImageLoader.parse(Array(full[0..<0x100]))
        }
        #expect(throws: ArchError.bzImageTruncated(what: "the setup header", end: 0x26C, fileSize: 0x240)) {
            _ = try BzImageLoader.parse(Array(full[0..<0x240]))
        }
        let error = #expect(throws: ArchError.self) { _ = try BzImageLoader.parse(Array(full[0..<0x400])) }
        #expect(error == .bzImageTruncated(what: "the setup code (1 sectors after the boot sector)", end: 0x400, fileSize: 0x400))
        // syssize announces 0x3000 bytes of kernel; only 0x1000 are there.
        let cut = try #require(#expect(throws: ArchError.self) { _ = try BzImageLoader.parse(Array(full[0..<0x1400])) })
        guard case .bzImageTruncated(_, 0x3400, 0x1400) = cut else { Issue.record("unexpected \(cut)"); return }
    }

    @Test func refusesAPreferredAddressAtTheTopOfTheAddressSpace() throws {
        // Found by fuzz/ (bzimage-loader): the run range's length no longer fit an Int and trapped.
        for relocatable: UInt8 in [1, 0] {
            var image = TestBzImage()
            image.relocatable = relocatable
            image.preferredAddress = 0xFFFF_FFFF_FFFF_0000
            let memory = try makeRAM(32 << 20)
            let error = #expect(throws: ArchError.self) { _ = try BzImageLoader.load(image.build(), into: memory) }
            guard case .bzImageBadLoadAddress(0xFFFF_FFFF_FFFF_0000, _)? = error else {
                Issue.record("unexpected \(String(describing: error))")
                continue
            }
        }
    }

    @Test func refusesKernelsThatDoNotFitInRAM() throws {
        var image = TestBzImage()
        image.initSize = 0x400_0000  // 64 MiB from 2 MiB passes the end of 32 MiB of RAM
        let memory = try makeRAM(32 << 20)
        let error = #expect(throws: ArchError.self) { _ = try BzImageLoader.load(image.build(), into: memory) }
        guard case .kernelOutsideRAM(0x100000, 0x420_0000, _)? = error else { Issue.record("unexpected \(String(describing: error))"); return }
        #expect(try memory.readBytes(count: 16, at: GuestAddress(0x100000)).allSatisfy { $0 == 0 })
    }
}

@Suite("Initramfs placement")
struct InitramfsTests {
    @Test func goesAsHighAsPossibleAndPageAligned() throws {
        let memory = try makeRAM()
        let placement = try InitramfsLoader.load(Array(repeating: 0x5A, count: 0x1800), into: memory)
        #expect(placement.address == GuestAddress((64 << 20) - 0x2000))
        #expect(placement.size == 0x1800)
        #expect(try memory.readBytes(count: 0x1800, at: placement.address).allSatisfy { $0 == 0x5A })
    }

    @Test func respectsInitrdAddrMax() throws {
        let memory = try makeRAM()
        let address = try InitramfsLoader.placement(size: 0x1000, memory: memory, maxAddress: 0x0FF_FFFF)
        #expect(address == GuestAddress(0xFF_F000))
        let unaligned = try InitramfsLoader.placement(size: 0x1001, memory: memory, maxAddress: 0x0FF_FFFF)
        #expect(unaligned == GuestAddress(0xFF_E000))
    }

    @Test func staysBelowTheHoleWithRAMAboveFourGiB() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0xC000_0000),
                                                (start: GuestAddress(0x1_0000_0000), size: 1 << 20)],
                                               options: [.noReserve])
        #expect(try InitramfsLoader.placement(size: 0x1000, memory: memory) == GuestAddress(0xBFFF_F000))
    }

    @Test func refusesWhatDoesNotFit() throws {
        let memory = try makeRAM(4 << 20)
        #expect(throws: ArchError.initramfsDoesNotFit(size: 8 << 20, limit: 4 << 20, lowest: 0)) {
            _ = try InitramfsLoader.placement(size: 8 << 20, memory: memory)
        }
        #expect(throws: ArchError.initramfsDoesNotFit(size: 3 << 20, limit: 4 << 20, lowest: 2 << 20)) {
            _ = try InitramfsLoader.placement(size: 3 << 20, memory: memory, lowestAddress: GuestAddress(2 << 20))
        }
    }
}
