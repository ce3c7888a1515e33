import Testing
import Hypervisor
@testable import Arch

@Suite("64-bit device area")
struct DeviceAreaTests {
    /// 2^bits - 1 MiB (platform devices) - 64 KiB, exclusive.
    func top(_ bits: UInt8) -> UInt64 { (UInt64(1) << bits) - 0x10_0000 - 0x1_0000 }

    @Test func smallGuestStartsAtFourGiB() throws {
        let area = try X86Layout.deviceArea(ramEnd: 512 << 20, physicalAddressBits: 40)
        #expect(area.base == 0x1_0000_0000)
        #expect(area.base + area.size == top(40))
        #expect(area.base + area.size == 0xFF_FFEF_0000)
    }

    @Test func ramEndingAtTheHoleStillStartsAtFourGiB() throws {
        #expect(try X86Layout.deviceArea(ramEnd: 0xC000_0000, physicalAddressBits: 46).base == 0x1_0000_0000)
    }

    @Test func largeGuestStartsRightAfterRAM() throws {
        // 6 GiB of RAM: 3 GiB below the hole, 3 GiB from 4 GiB, so RAM ends at 7 GiB.
        let ramEnd: UInt64 = 0x1_C000_0000
        let area = try X86Layout.deviceArea(ramEnd: ramEnd, physicalAddressBits: 46)
        #expect(area.base == ramEnd && area.base + area.size == top(46))
    }

    @Test func hotplugRoomIsKeptAfterAlignedRAM() throws {
        let ramEnd: UInt64 = 0x1_0000_0000 + (100 << 20)
        let acpi = try X86Layout.deviceArea(ramEnd: ramEnd, hotplugSize: 1 << 30, physicalAddressBits: 40)
        #expect(acpi.base == 0x1_0800_0000 + (1 << 30))
        let virtioMem = try X86Layout.deviceArea(ramEnd: ramEnd, hotplugSize: 1 << 30, virtioMem: true, physicalAddressBits: 40)
        #expect(virtioMem.base == 0x1_0800_0000 + (1 << 30))
        let small = try X86Layout.deviceArea(ramEnd: 1 << 30, hotplugSize: 1 << 30, physicalAddressBits: 40)
        #expect(small.base == 0x1_0000_0000 + (1 << 30))
    }

    @Test func noRoomIsAnError() {
        #expect(throws: ArchError.self) { try X86Layout.deviceArea(ramEnd: 1 << 32 + 1, physicalAddressBits: 32) }
        #expect(throws: ArchError.self) { try X86Layout.deviceArea(ramEnd: 0xF_FFF0_0000, physicalAddressBits: 36) }
    }

    @Test func guestAddressWidthIsTheHostsCappedAtMaxPhysBits() {
        let host40 = [CPUIDEntry(function: 0x8000_0008, eax: 0x3028)]
        #expect(CPUIDBuilder.physicalAddressBits(supported: host40, maximum: 46) == 40)
        let host52 = [CPUIDEntry(function: 0x8000_0008, eax: 0x3034)]
        #expect(CPUIDBuilder.physicalAddressBits(supported: host52, maximum: 46) == 46)
        #expect(CPUIDBuilder.physicalAddressBits(supported: [], maximum: 46) == 36)
    }
}
