import Testing
import GuestMemory
@testable import Arch

@Suite("Zero page and PVH start info")
struct BootStructureTests {
    let e820 = [
        E820Entry(address: 0, size: 0xA0000, type: .ram),
        E820Entry(address: 0x100000, size: 0x3F0_0000, type: .ram),
        E820Entry(address: 0xE800_0000, size: 0x1000_0000, type: .reserved),
    ]

    @Test func bootParamsFieldsAtTheirOffsets() throws {
        let bzImage = try BzImageLoader.parse(TestBzImage().build())
        let params = BootParams(setupHeader: bzImage.header, commandLineAddress: X86Layout.cmdlineStart, commandLineSize: 14,
                                initramfs: InitramfsPlacement(address: GuestAddress(0x3F0_0000), size: 0x1234),
                                e820: e820, acpiRSDPAddress: X86Layout.rsdpPointer)
        let page = try params.encode()
        #expect(page.count == 4096)
        #expect(page[0x1E8] == 3)
        #expect(page.get(UInt64.self, at: 0x2D0) == 0)
        #expect(page.get(UInt64.self, at: 0x2D8) == 0xA0000)
        #expect(page.get(UInt32.self, at: 0x2E0) == 1)
        #expect(page.get(UInt64.self, at: 0x2D0 + 20) == 0x100000)
        #expect(page.get(UInt64.self, at: 0x2D0 + 40) == 0xE800_0000)
        #expect(page.get(UInt32.self, at: 0x2D0 + 56) == 2)
        #expect(page.get(UInt32.self, at: 0x228) == 0x20000)
        #expect(page.get(UInt32.self, at: 0x238) == 14)
        #expect(page.get(UInt32.self, at: 0x218) == 0x3F0_0000)
        #expect(page.get(UInt32.self, at: 0x21C) == 0x1234)
        #expect(page[0x210] == 0xFF)
        #expect(page.get(UInt16.self, at: 0x1FE) == 0xAA55)
        #expect(page.get(UInt32.self, at: 0x202) == 0x5372_6448)
        #expect(page.get(UInt16.self, at: 0x206) == 0x020F)
        #expect(page.get(UInt64.self, at: 0x070) == 0xA0000)
        #expect(page.get(UInt32.self, at: 0x0C0) == 0 && page.get(UInt32.self, at: 0x0C8) == 0)
        #expect(page[0x1EF] == 0)  // sentinel
    }

    @Test func highAddressesGoToTheExtFields() throws {
        let params = BootParams(commandLineAddress: GuestAddress(0x1_2000_0000), commandLineSize: 5,
                                initramfs: InitramfsPlacement(address: GuestAddress(0x2_0000_1000), size: 0x1_0000_0010))
        let page = try params.encode()
        #expect(page.get(UInt32.self, at: 0x228) == 0x2000_0000)
        #expect(page.get(UInt32.self, at: 0x0C8) == 1)
        #expect(page.get(UInt32.self, at: 0x218) == 0x1000)
        #expect(page.get(UInt32.self, at: 0x0C0) == 2)
        #expect(page.get(UInt32.self, at: 0x21C) == 0x10)
        #expect(page.get(UInt32.self, at: 0x0C4) == 1)
        // The minimal header (ELF kernels) carries the magic values and a 16 MiB alignment.
        #expect(page.get(UInt32.self, at: 0x230) == 0x100_0000)
    }

    @Test func bootParamsRefusesBadHeadersAndTooManyEntries() throws {
        var header = SetupHeader.minimal()
        header.set(UInt32.self, at: 0x202, 0)
        let error = #expect(throws: ArchError.self) { _ = try BootParams(setupHeader: header).encode() }
        guard case .invalidSetupHeader? = error else { Issue.record("unexpected \(String(describing: error))"); return }
        let many = Array(repeating: E820Entry(address: 0, size: 1, type: .ram), count: 129)
        #expect(throws: ArchError.tooManyE820Entries(count: 129, max: 128)) { _ = try BootParams(e820: many).encode() }
        #expect(throws: ArchError.invalidSetupHeader(reason: "it is 3 bytes long instead of 123")) {
            _ = try SetupHeader(bytes: [1, 2, 3])
        }
    }

    @Test func bootParamsWriteGoesToTheZeroPage() throws {
        let memory = try makeRAM(1 << 20)
        try BootParams(e820: e820).write(to: memory)
        #expect(try read(memory, UInt8.self, at: 0x7000 + 0x1E8) == 3)
        #expect(try read(memory, UInt64.self, at: 0x7000 + 0x2D0 + 20) == 0x100000)
    }

    @Test func pvhStartInfoLayout() throws {
        let info = PVHStartInfo(modules: [PVHModule(address: GuestAddress(0x3F0_0000), size: 0x1234)],
                                commandLineAddress: X86Layout.cmdlineStart, rsdpAddress: GuestAddress(0xA0000), memoryMap: e820)
        let bytes = info.encodeStartInfo()
        #expect(bytes.count == 56)
        #expect(bytes.get(UInt32.self, at: 0) == 0x336E_C578)
        #expect(bytes.get(UInt32.self, at: 4) == 1)
        #expect(bytes.get(UInt32.self, at: 8) == 0)
        #expect(bytes.get(UInt32.self, at: 12) == 1)
        #expect(bytes.get(UInt64.self, at: 16) == 0x6040)
        #expect(bytes.get(UInt64.self, at: 24) == 0x20000)
        #expect(bytes.get(UInt64.self, at: 32) == 0xA0000)
        #expect(bytes.get(UInt64.self, at: 40) == 0x7000)
        #expect(bytes.get(UInt32.self, at: 48) == 3)
        let modules = info.encodeModuleList()
        #expect(modules.count == 32)
        #expect(modules.get(UInt64.self, at: 0) == 0x3F0_0000 && modules.get(UInt64.self, at: 8) == 0x1234)
        #expect(modules.get(UInt64.self, at: 16) == 0 && modules.get(UInt64.self, at: 24) == 0)
    }

    @Test func pvhWriteLaysOutStartInfoModulesAndMemmap() throws {
        let memory = try makeRAM(1 << 20)
        try PVHStartInfo(memoryMap: e820).write(to: memory)
        #expect(try read(memory, UInt32.self, at: 0x6000) == 0x336E_C578)
        #expect(try read(memory, UInt64.self, at: 0x6010) == 0)  // no modules: no list
        #expect(try read(memory, UInt32.self, at: 0x6030) == 3)
        // hvm_memmap_table_entry: 24 bytes each.
        #expect(try read(memory, UInt64.self, at: 0x7000 + 24) == 0x100000)
        #expect(try read(memory, UInt64.self, at: 0x7000 + 32) == 0x3F0_0000)
        #expect(try read(memory, UInt32.self, at: 0x7000 + 40) == 1)
        #expect(try read(memory, UInt32.self, at: 0x7000 + 48 + 16) == 2)
        #expect(try read(memory, UInt32.self, at: 0x7000 + 48 + 20) == 0)
    }

    @Test func pvhRefusesOverlapsAndMissingRAM() throws {
        let memory = try makeRAM(1 << 20)
        let modules = Array(repeating: PVHModule(address: GuestAddress(0x200000), size: 1), count: 4)
        #expect(throws: ArchError.bootStructuresOverlap(first: "the PVH module list", second: "the PVH memory map")) {
            try PVHStartInfo(modules: modules, memoryMap: e820)
                .write(to: memory, modlistAddress: GuestAddress(0x6FC0))
        }
        let small = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x7000)])
        let error = #expect(throws: ArchError.self) { try PVHStartInfo(memoryMap: e820).write(to: small) }
        guard case .guestMemory? = error else { Issue.record("unexpected \(String(describing: error))"); return }
        #expect(try read(small, UInt32.self, at: 0x6000) == 0)  // nothing written
    }
}
