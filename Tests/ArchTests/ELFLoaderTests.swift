import Testing
import GuestMemory
@testable import Arch

@Suite("ELF loader")
struct ELFLoaderTests {
    /// A text segment at 1 MiB, a data segment with BSS at 2 MiB, and a PVH note.
    func kernel(noteDescriptorSize: Int = 8, pvhEntry: UInt64 = 0x1000_0A0) -> TestELF {
        var elf = TestELF()
        elf.entry = 0x100040
        elf.segments = [
            .init(type: 1, physicalAddress: 0x100000, virtualAddress: 0xFFFF_FFFF_8100_0000, bytes: Array(0..<200)),
            .init(type: 1, physicalAddress: 0x200000, bytes: [0xAA, 0xBB, 0xCC, 0xDD], memorySize: 0x2000),
            .init(type: 4, physicalAddress: 0, bytes: TestELF.note(name: "GNU", type: 3, descriptor: [1, 2, 3])
                    + TestELF.pvhNote(entry: pvhEntry, descriptorSize: noteDescriptorSize), align: 4),
        ]
        return elf
    }

    @Test func loadsSegmentsAtPhysicalAddressesAndFindsThePVHEntry64() throws {
        let memory = try makeRAM()
        let result = try ELFLoader.load(kernel().build(), into: memory)
        #expect(result.entry == GuestAddress(0x100040))
        #expect(result.pvhEntry == GuestAddress(0x1000_0A0))
        #expect(result.loadStart == GuestAddress(0x100000))
        #expect(result.loadEnd == GuestAddress(0x202000))
        #expect(result.setupHeader == nil)
        #expect(try memory.readBytes(count: 200, at: GuestAddress(0x100000)) == Array(0..<200))
        #expect(try memory.readBytes(count: 4, at: GuestAddress(0x200000)) == [0xAA, 0xBB, 0xCC, 0xDD])
    }

    @Test func findsAThirtyTwoBitPVHNote() throws {
        let memory = try makeRAM()
        let result = try ELFLoader.load(kernel(noteDescriptorSize: 4, pvhEntry: 0x0123_4567).build(), into: memory)
        #expect(result.pvhEntry == GuestAddress(0x0123_4567))
    }

    @Test func noNoteMeansNoPVHEntry() throws {
        var elf = kernel()
        elf.segments.removeLast()
        #expect(try ELFLoader.load(elf.build(), into: try makeRAM()).pvhEntry == nil)
    }

    @Test func pvhEntryAboveFourGiBIsRefused() throws {
        let image = kernel(pvhEntry: 0x1_0000_0000).build()
        let error = #expect(throws: ArchError.self) { _ = try ELFLoader.load(image, into: try makeRAM()) }
        guard case .pvhEntryInvalid? = error else { Issue.record("unexpected \(String(describing: error))"); return }
    }

    @Test func zeroesTheBSSEvenOverOldBytes() throws {
        let memory = try makeRAM()
        try memory.fill(0xEE, count: 0x3000, at: GuestAddress(0x200000))
        _ = try ELFLoader.load(kernel().build(), into: memory)
        let bss = try memory.readBytes(count: 0x2000 - 4, at: GuestAddress(0x200004))
        #expect(bss.allSatisfy { $0 == 0 })
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x202000)) == 0xEE)
    }

    @Test func refusesBadMagicClassEncodingAndMachine() throws {
        var image = kernel().build()
        image[1] = 0x45 + 1
        #expect(throws: ArchError.elfBadMagic([0x7F, 0x46, 0x4C, 0x46])) { _ = try ELFImage(parsing: image, machine: 62) }

        var elf = kernel()
        elf.elfClass = 1
        let classError = #expect(throws: ArchError.self) { _ = try ELFImage(parsing: elf.build(), machine: 62) }
        #expect(classError == .elfNot64Bit(elfClass: 1))
        #expect(classError?.description.contains("32-bit") == true)

        elf = kernel()
        elf.dataEncoding = 2
        #expect(throws: ArchError.elfNotLittleEndian(dataEncoding: 2)) { _ = try ELFImage(parsing: elf.build(), machine: 62) }

        elf = kernel()
        elf.machine = 183
        #expect(throws: ArchError.elfWrongMachine(found: 183, expected: 62)) {
            _ = try ELFLoader.load(elf.build(), into: try makeRAM())
        }

        elf = kernel()
        elf.fileType = 1
        #expect(throws: ArchError.elfNotExecutable(fileType: 1)) { _ = try ELFImage(parsing: elf.build(), machine: 62) }
    }

    @Test func refusesTruncatedHeadersAndProgramHeaders() throws {
        let image = kernel().build()
        #expect(throws: ArchError.elfTruncated(what: "the ELF header", end: 64, fileSize: 10)) {
            _ = try ELFImage(parsing: Array(image[0..<10]), machine: 62)
        }
        // The table holds 3 headers at 64..<232; cut the file inside header 2.
        let cut = Array(image[0..<200])
        let error = #expect(throws: ArchError.self) { _ = try ELFImage(parsing: cut, machine: 62) }
        #expect(error == .elfTruncated(what: "program header 2", end: 232, fileSize: 200))
        #expect(error?.description == "the kernel image is truncated: program header 2 ends at byte 0xe8 but the file has 0xc8 bytes")

        var elf = kernel()
        elf.programHeaderSize = 32
        #expect(throws: ArchError.elfBadProgramHeaderSize(32)) { _ = try ELFImage(parsing: elf.build(), machine: 62) }
        elf = kernel()
        elf.programHeaderOffset = 8
        #expect(throws: ArchError.elfBadProgramHeaderOffset(8)) { _ = try ELFImage(parsing: elf.build(), machine: 62) }
        elf = kernel()
        elf.segments = [.init(type: 4, bytes: TestELF.pvhNote(entry: 1, descriptorSize: 4))]
        #expect(throws: ArchError.elfNoLoadableSegments) { _ = try ELFImage(parsing: elf.build(), machine: 62) }
    }

    @Test func refusesSegmentsOutsideTheFile() throws {
        var elf = kernel()
        elf.segments[0].fileSize = 0x10_0000
        let image = elf.build()
        let error = #expect(throws: ArchError.self) { _ = try ELFLoader.load(image, into: try makeRAM()) }
        guard case let .elfSegmentOutsideFile(index, _, size, fileSize)? = error else {
            Issue.record("unexpected \(String(describing: error))"); return
        }
        #expect(index == 0 && size == 0x10_0000 && fileSize == image.count)
        #expect(error?.description.contains("truncated") == true)
    }

    @Test func refusesSegmentsOutsideRAMAndBelowOneMiBWithoutWriting() throws {
        let memory = try makeRAM(4 << 20)
        var elf = kernel()
        elf.segments[1].physicalAddress = 0x3FF000  // 0x2000 bytes of memory from here pass 4 MiB
        let error = #expect(throws: ArchError.self) { _ = try ELFLoader.load(elf.build(), into: memory) }
        guard case let .elfSegmentOutsideRAM(index, address, size, _)? = error else {
            Issue.record("unexpected \(String(describing: error))"); return
        }
        #expect(index == 1 && address == 0x3FF000 && size == 0x2000)
        // Segment 0 was checked but never written: nothing moves before every check passes.
        #expect(try memory.readBytes(count: 200, at: GuestAddress(0x100000)).allSatisfy { $0 == 0 })

        elf = kernel()
        elf.segments[0].physicalAddress = 0x7000
        #expect(throws: ArchError.elfSegmentBelowLowestAddress(index: 0, address: 0x7000, lowest: 0x100000)) {
            _ = try ELFLoader.load(elf.build(), into: memory)
        }
    }

    @Test func refusesOverflowingAndInconsistentSegments() throws {
        var elf = kernel()
        elf.segments[1].physicalAddress = UInt64.max - 0x10
        #expect(throws: ArchError.elfSegmentOverflow(index: 1, what: "physical range", start: UInt64.max - 0x10, size: 0x2000)) {
            _ = try ELFImage(parsing: elf.build(), machine: 62)
        }
        elf = kernel()
        elf.segments[0].fileOffset = UInt64.max - 4
        let error = #expect(throws: ArchError.self) { _ = try ELFImage(parsing: elf.build(), machine: 62) }
        guard case .elfSegmentOverflow(0, "file range", _, _)? = error else {
            Issue.record("unexpected \(String(describing: error))"); return
        }
        elf = kernel()
        elf.segments[1].memorySize = 2
        #expect(throws: ArchError.elfSegmentFileSizeExceedsMemorySize(index: 1, fileSize: 4, memorySize: 2)) {
            _ = try ELFImage(parsing: elf.build(), machine: 62)
        }
    }

    @Test func refusesMalformedNotes() throws {
        var elf = kernel()
        var note = TestELF.pvhNote(entry: 0x1000, descriptorSize: 4)
        note.put(UInt32(0x100), at: 4)  // descriptor size past the segment
        elf.segments[2].bytes = note
        let error = #expect(throws: ArchError.self) { _ = try ELFImage(parsing: elf.build(), machine: 62) }
        guard case .elfMalformedNote(segment: 2, offset: 0, _)? = error else {
            Issue.record("unexpected \(String(describing: error))"); return
        }
        elf.segments[2].bytes = TestELF.note(name: "Xen", type: 18, descriptor: [1, 2])
        #expect(throws: ArchError.pvhEntryInvalid(reason: "its descriptor is 2 bytes, not 4 or 8")) {
            _ = try ELFImage(parsing: elf.build(), machine: 62).pvhEntry()
        }
    }

    @Test func parsesNotesAndSegments() throws {
        let elf = try ELFImage(parsing: kernel().build(), machine: ELFImage.machineX86_64)
        #expect(elf.loadSegments.count == 2)
        #expect(elf.loadSegments[0].virtualAddress == 0xFFFF_FFFF_8100_0000)
        #expect(elf.notes.map(\.name) == [Array("GNU".utf8), Array("Xen".utf8)])
        #expect(elf.notes[0].descriptor == [1, 2, 3])
    }
}
