import Testing
import GuestMemory
@testable import Arch

@Suite("Memory layout")
struct LayoutTests {
    @Test func fixedAddressesMatchCloudHypervisor() {
        #expect(X86Layout.bootGDTStart.rawValue == 0x500)
        #expect(X86Layout.bootIDTStart.rawValue == 0x520)
        #expect(X86Layout.pvhInfoStart.rawValue == 0x6000)
        #expect(X86Layout.zeroPageStart.rawValue == 0x7000)
        #expect(X86Layout.bootStackPointer.rawValue == 0x8FF0)
        #expect(X86Layout.pml4Start.rawValue == 0x9000)
        #expect(X86Layout.cmdlineStart.rawValue == 0x20000)
        #expect(X86Layout.mpTableStart.rawValue == 0x9FC00)
        #expect(X86Layout.pciMMConfigStart.rawValue
                == X86Layout.mem32BitDevicesStart.rawValue + X86Layout.mem32BitDevicesSize)
        #expect(X86Layout.kvmTSSStart.rawValue == X86Layout.pciMMConfigStart.rawValue + X86Layout.pciMMConfigSize)
        #expect(X86Layout.kvmIdentityMapStart.rawValue == X86Layout.kvmTSSStart.rawValue + X86Layout.kvmTSSSize)
        #expect(X86Layout.mem32BitReservedStart.rawValue + X86Layout.ramHoleSize == X86Layout.ram64BitStart.rawValue)
    }

    @Test func oneGiBFitsBelowTheHole() throws {
        let regions = try X86Layout.ramRegions(size: 1 << 30)
        #expect(regions.count == 1)
        #expect(regions[0].0 == GuestAddress(0) && regions[0].1 == 1 << 30)
        let e820 = try X86Layout.e820Entries(ramRegions: regions)
        #expect(e820 == [
            E820Entry(address: 0, size: 0xA0000, type: .ram),
            E820Entry(address: 0x100000, size: (1 << 30) - 0x100000, type: .ram),
            E820Entry(address: 0xE800_0000, size: 256 << 20, type: .reserved),
        ])
    }

    @Test func threeGiBEndsExactlyAtTheHole() throws {
        let regions = try X86Layout.ramRegions(size: 3 << 30)
        #expect(regions.count == 1)
        #expect(regions[0].1 == 0xC000_0000)
        let e820 = try X86Layout.e820Entries(ramRegions: regions)
        #expect(e820.count == 3)
        #expect(e820[1] == E820Entry(address: 0x100000, size: 0xC000_0000 - 0x100000, type: .ram))
    }

    @Test func fiveGiBContinuesAboveFourGiB() throws {
        let regions = try X86Layout.ramRegions(size: 5 << 30)
        #expect(regions.map(\.0) == [GuestAddress(0), GuestAddress(0x1_0000_0000)])
        #expect(regions.map(\.1) == [3 << 30, 2 << 30])
        let e820 = try X86Layout.e820Entries(ramRegions: regions)
        #expect(e820 == [
            E820Entry(address: 0, size: 0xA0000, type: .ram),
            E820Entry(address: 0x100000, size: 0xC000_0000 - 0x100000, type: .ram),
            E820Entry(address: 0x1_0000_0000, size: 2 << 30, type: .ram),
            E820Entry(address: 0xE800_0000, size: 0x1000_0000, type: .reserved),
        ])
    }

    @Test func contiguousRegionsMergeAndBadLayoutsAreRefused() throws {
        let split = [(GuestAddress(0x100000), UInt64(0x100000)), (GuestAddress(0), UInt64(0x100000))]
        let e820 = try X86Layout.e820Entries(ramRegions: split)
        #expect(e820[1] == E820Entry(address: 0x100000, size: 0x100000, type: .ram))
        #expect(throws: ArchError.unexpectedRAMLayout(start: 0, end: 0x80000)) {
            _ = try X86Layout.e820Entries(ramRegions: [(GuestAddress(0), 0x80000)])
        }
        #expect(throws: ArchError.invalidRAMSize(0)) { _ = try X86Layout.ramRegions(size: 0) }
        #expect(throws: ArchError.invalidRAMSize(UInt64.max)) { _ = try X86Layout.ramRegions(size: UInt64.max) }
        #expect(ArchError.unexpectedRAMLayout(start: 0, end: 0x80000).description.contains("[0x0, 0x80000)"))
    }

    @Test func e820EntryEncodesTwentyBytes() {
        let bytes = E820Entry(address: 0x1122_3344_5566_7788, size: 0x10, type: .acpi).bootParamsBytes
        #expect(bytes.count == 20)
        #expect(bytes.get(UInt64.self, at: 0) == 0x1122_3344_5566_7788)
        #expect(bytes.get(UInt64.self, at: 8) == 0x10)
        #expect(bytes.get(UInt32.self, at: 16) == 3)
        #expect(E820Type.nvs.rawValue == 4 && E820Type.reserved.rawValue == 2)
    }

    @Test func lowRAMEndIsCappedAtTheHole() throws {
        let memory = try makeRAM(32 << 20)
        #expect(X86Layout.lowRAMEnd(memory: memory) == 32 << 20)
    }
}

@Suite("Kernel command line")
struct CommandLineTests {
    @Test func buildsAndWritesNULTerminated() throws {
        var cmdline = try KernelCmdline("console=ttyS0")
        try cmdline.append("reboot=k")
        #expect(cmdline.text == "console=ttyS0 reboot=k")
        #expect(cmdline.sizeWithTerminator == 23)
        let memory = try makeRAM(1 << 20)
        try cmdline.write(to: memory)
        let bytes = try memory.readBytes(count: 23, at: X86Layout.cmdlineStart)
        #expect(bytes == Array("console=ttyS0 reboot=k".utf8) + [0])
    }

    @Test func refusesNULAndOversizeWithBothSizes() throws {
        #expect(throws: ArchError.commandLineContainsNUL(position: 3)) { _ = try KernelCmdline("abc\0def") }
        // 2047 bytes + NUL fit the default 2048, 2048 do not.
        _ = try KernelCmdline(String(repeating: "a", count: 2047))
        let error = #expect(throws: ArchError.self) { _ = try KernelCmdline(String(repeating: "a", count: 2048)) }
        #expect(error == .commandLineTooLong(size: 2049, maxSize: 2048))
        #expect(error?.description.contains("2049") == true && error?.description.contains("2048") == true)
        var small = try KernelCmdline("root=/dev/vda", maxSize: 16)
        #expect(throws: ArchError.commandLineTooLong(size: 17, maxSize: 16)) { try small.append("ro") }
        #expect(small.text == "root=/dev/vda")
        #expect(throws: ArchError.invalidCommandLineMaxSize(0)) { _ = try KernelCmdline("", maxSize: 0) }
    }
}
